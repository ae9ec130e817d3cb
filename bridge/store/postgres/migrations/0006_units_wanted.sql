-- When a replica last said it can work on a unit: a scope removed from every replica's config
-- (a tenant gone) stops counting in the shares after a while instead of skewing them forever.
ALTER TABLE leases ADD COLUMN wanted_at timestamptz NOT NULL DEFAULT clock_timestamp();
