-- Idempotency keys: one row per Idempotency-Key an account sent with a POST
-- under /api, and per one-time token of a dashboard form, so that a retry
-- gets the first answer instead of doing the work again (a second key).
--
-- Nothing here can be used without SECRET_KEY and the client's own key:
-- digest is an HMAC of the key under a key derived from SECRET_KEY, never
-- the key itself; fingerprint is an HMAC of the request under a key derived
-- from both; response is the first answer (which may hold a new key's
-- secret), sealed with AES-256-GCM under that same derived key. status is
-- NULL while the first request is in flight.
CREATE TABLE idempotency_keys (
    user_id     bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    digest      bytea       NOT NULL CHECK (octet_length(digest) = 32),
    fingerprint bytea       NOT NULL CHECK (octet_length(fingerprint) = 32),
    status      smallint    CHECK (status BETWEEN 100 AND 599),
    response    bytea,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, digest),
    CHECK ((status IS NULL) = (response IS NULL)),
    CHECK (expires_at > created_at)
);
-- Rows are swept once they expire (DeleteExpiredIdempotencyKeys).
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
