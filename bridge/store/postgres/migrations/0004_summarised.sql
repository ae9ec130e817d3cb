-- Events a storm summary carried (bridge/grouping.py) are kept beside the dead letters, whole
-- and replayable, but they are not failures: `summary` is the id of the summary that carried
-- one, NULL for a dead letter (the SQLite store's migration 0006).
ALTER TABLE dead_letters ADD COLUMN summary text;
CREATE INDEX dead_letters_summary ON dead_letters (sink, seq) WHERE summary IS NOT NULL;
