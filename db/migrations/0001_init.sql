-- Accounts, revocable sessions, hashed keys and the login throttle.

CREATE TABLE users (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         text        NOT NULL CHECK (email <> '' AND char_length(email) <= 254),
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
-- Emails are unique regardless of case.
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

-- One row per signed-in JWT or browser session; deleting it revokes it everywhere.
CREATE TABLE sessions (
    id           text        PRIMARY KEY,
    user_id      bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind         text        NOT NULL CHECK (kind IN ('api', 'browser')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

-- Proxy (ms-) and billing (mk-) keys. Only the SHA-256 of a key is kept.
CREATE TABLE api_keys (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind         text        NOT NULL CHECK (kind IN ('proxy', 'billing')),
    name         text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    prefix       text        NOT NULL,
    digest       bytea       NOT NULL CHECK (octet_length(digest) = 32),
    active       boolean     NOT NULL DEFAULT true,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    last_used_at timestamptz
);
-- Authentication looks keys up by digest.
CREATE UNIQUE INDEX api_keys_digest_key ON api_keys (digest);
-- Listing is per account and kind, newest first.
CREATE INDEX api_keys_user_kind_id_idx ON api_keys (user_id, kind, id DESC);

-- Failed sign-ins per scope ("email:…" or "ip:…") in the current window.
CREATE TABLE login_failures (
    scope        text        PRIMARY KEY,
    failures     integer     NOT NULL CHECK (failures > 0),
    window_start timestamptz NOT NULL
);
