-- The outbox keeps one index, (sink, seq), for every statement on it: a claim is a range of
-- it in order, an acknowledgement a set of its keys. The separate index on seq alone was one
-- more b-tree to update for every row queued and delivered. Sequence numbers stay unique:
-- they come from one sequence.
ALTER TABLE outbox DROP CONSTRAINT outbox_pkey;
DROP INDEX outbox_sink;
ALTER TABLE outbox ADD PRIMARY KEY (sink, seq);
-- A queue that fills and drains within minutes: statistics and cleanup that keep up with it.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0.02,
                        autovacuum_analyze_scale_factor = 0.02);
