-- The last four characters of a key, shown beside its prefix (ms-abc1…wxyz)
-- so that keys sharing a prefix can be told apart at a glance. Keys made
-- before this migration have none (NULL) and show only their prefix. The
-- digest stays the only way a key is verified.
ALTER TABLE api_keys ADD COLUMN hint text CHECK (hint ~ '^[0-9A-Za-z]{4}$');

-- The dashboard lists an account's keys by last use, most recent first
-- (never-used keys last); by creation it uses api_keys_user_kind_id_idx.
CREATE INDEX api_keys_user_kind_last_used_idx ON api_keys (user_id, kind, last_used_at DESC NULLS LAST, id DESC);
