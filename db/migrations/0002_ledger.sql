-- The prepaid ledger. Amounts are bigint nano-dollars (1e-9 USD): exact.
--
-- Invariant, per account, kept by every write in one transaction:
--   balances.credits = sum(amount) of its credit and adjustment entries
--   balances.usage   = -sum(amount) of its usage entries
--   balances.held    = sum(amount) of its holds
--   balance          = credits - usage - held
-- Entries are never changed: corrections are new adjustment entries.

CREATE TABLE balances (
    user_id bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    credits bigint NOT NULL DEFAULT 0,
    usage   bigint NOT NULL DEFAULT 0 CHECK (usage >= 0),
    held    bigint NOT NULL DEFAULT 0 CHECK (held >= 0)
);
INSERT INTO balances (user_id) SELECT id FROM users;

CREATE TABLE ledger_entries (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    type          text        NOT NULL CHECK (type IN ('credit', 'adjustment', 'usage')),
    amount        bigint      NOT NULL,
    balance_after bigint      NOT NULL, -- credits - usage right after this entry
    description   text        NOT NULL,
    reference     text,                 -- makes a credit idempotent (a payment id)
    created_at    timestamptz NOT NULL,
    -- A usage entry is one metered inference. key_id has no foreign key:
    -- usage outlives a deleted key.
    key_id        bigint,
    model         text,
    generation_id text UNIQUE,
    input_tokens  bigint,
    output_tokens bigint,
    estimated     boolean,
    streamed      boolean,
    status        text,
    finish_reason text,
    latency_ms    bigint,
    CHECK ((type = 'usage') = (generation_id IS NOT NULL)),
    CHECK (type <> 'credit' OR amount > 0),
    CHECK (type <> 'usage' OR amount <= 0)
);
CREATE UNIQUE INDEX ledger_entries_reference_key ON ledger_entries (user_id, reference) WHERE reference IS NOT NULL;
-- Transactions are read newest first, per account, optionally by type or key.
CREATE INDEX ledger_entries_user_id_idx ON ledger_entries (user_id, id DESC);
CREATE INDEX ledger_entries_user_type_idx ON ledger_entries (user_id, type, id DESC);
CREATE INDEX ledger_entries_user_key_idx ON ledger_entries (user_id, key_id, id DESC) WHERE key_id IS NOT NULL;

-- Usage per hour, key and model, written with each usage entry: /api/usage
-- and key windows read these instead of every entry.
CREATE TABLE usage_hourly (
    user_id       bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    hour          timestamptz NOT NULL,
    key_id        bigint      NOT NULL,
    model         text        NOT NULL,
    requests      bigint      NOT NULL,
    input_tokens  bigint      NOT NULL,
    output_tokens bigint      NOT NULL,
    cost          bigint      NOT NULL,
    PRIMARY KEY (user_id, hour, key_id, model)
);

-- Money set aside for requests in flight. A hold never settled (a crashed
-- process) is released by a sweep once it expires.
CREATE TABLE holds (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_id     bigint      NOT NULL,
    amount     bigint      NOT NULL CHECK (amount >= 0),
    expires_at timestamptz NOT NULL
);
CREATE INDEX holds_expires_at_idx ON holds (expires_at);

-- Per-key spend limits. The current window's spend is window_usage while
-- window_start is the start of the window containing now; a new window
-- starts at zero on the next write, so no job has to roll windows over.
ALTER TABLE api_keys
    ADD COLUMN spend_limit  bigint CHECK (spend_limit >= 0),
    ADD COLUMN limit_reset  text CHECK (limit_reset IN ('daily', 'weekly', 'monthly')),
    ADD COLUMN models       text[],
    ADD COLUMN window_start timestamptz NOT NULL DEFAULT '-infinity',
    ADD COLUMN window_usage bigint NOT NULL DEFAULT 0,
    ADD COLUMN held         bigint NOT NULL DEFAULT 0 CHECK (held >= 0);

-- The start of the limit window containing at: UTC days, Monday weeks, months;
-- without a reset, one window for all time.
CREATE FUNCTION key_window_start(reset text, at timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE reset
        WHEN 'daily'   THEN date_trunc('day', at, 'UTC')
        WHEN 'weekly'  THEN date_trunc('week', at, 'UTC')
        WHEN 'monthly' THEN date_trunc('month', at, 'UTC')
        ELSE '-infinity'::timestamptz
    END
$$;
