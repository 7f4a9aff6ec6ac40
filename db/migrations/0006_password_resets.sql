-- Password resets: one row per link sent by "Forgot password?". Only the
-- SHA-256 of the link's token is kept, so that a copy of the database cannot
-- reset anyone's password. A link works once (its row is deleted when used)
-- and until expires_at; a reset, a password change or deleting the account
-- ends every link of the account.
CREATE TABLE password_resets (
    digest     bytea       PRIMARY KEY CHECK (octet_length(digest) = 32),
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    CHECK (expires_at > created_at)
);
CREATE INDEX password_resets_user_id_idx ON password_resets (user_id);
-- Ended links are swept when a new one is made.
CREATE INDEX password_resets_expires_at_idx ON password_resets (expires_at);
