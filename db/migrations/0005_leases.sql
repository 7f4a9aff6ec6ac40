-- Leases: budget a replica of the gateway reserves ahead, so that it admits
-- requests from memory instead of writing the account's balances row for
-- each one (db/meter.go). A lease is held money like a hold: it is part of
-- balances.held (key_id 0, the account's balance) or of api_keys.held (a key
-- with a spend limit), set and shrunk in the same transaction as that row.
-- A replica renews its leases while it lives and returns them when it goes
-- idle or shuts down; the leases of a replica that died are released by a
-- sweep once they expire.
--
-- The ledger invariant of 0002_ledger.sql, with leases, per account:
--   balances.credits = sum(amount) of its credit and adjustment entries
--   balances.usage   = -sum(amount) of its usage entries
--   balances.held    = sum(amount) of its holds
--                    + sum(amount) of its leases with key_id = 0
--   api_keys.held    = sum(amount) of the key's holds
--                    + sum(amount) of the key's leases (key_id = the key)
--   balance          = credits - usage - held

CREATE TABLE leases (
    replica    text        NOT NULL, -- random per process
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_id     bigint      NOT NULL, -- 0: the account's balance; else the key's limit
    amount     bigint      NOT NULL CHECK (amount >= 0),
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (replica, user_id, key_id)
);
CREATE INDEX leases_expires_at_idx ON leases (expires_at);
