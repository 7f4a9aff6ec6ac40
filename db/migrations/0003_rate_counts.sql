-- Sign-in failures become one kind of rate count among others (sign-ups per
-- address, key writes per billing key or session): events per scope in the
-- current fixed window, which ends at window_end.
ALTER TABLE login_failures RENAME TO rate_counts;
ALTER TABLE rate_counts RENAME COLUMN failures TO hits;
ALTER TABLE rate_counts RENAME CONSTRAINT login_failures_failures_check TO rate_counts_hits_check;
ALTER TABLE rate_counts ADD COLUMN window_end timestamptz;
UPDATE rate_counts SET window_end = window_start + interval '15 minutes';
ALTER TABLE rate_counts ALTER COLUMN window_end SET NOT NULL;
CREATE INDEX rate_counts_window_end_idx ON rate_counts (window_end);
ALTER INDEX login_failures_pkey RENAME TO rate_counts_pkey;
