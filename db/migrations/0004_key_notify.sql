-- Every replica caches key checks; a change that can end a key's validity
-- or change what it may spend on notifies them all (LISTEN
-- modelswitch_keys) with the key's digest, so that a revoked key fails,
-- and a new limit or model list holds, on the next request everywhere.
-- Writes of bookkeeping columns (last use, spend, holds) do not notify.
CREATE FUNCTION notify_key_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('modelswitch_keys', encode(NEW.digest, 'hex'));
    ELSE
        PERFORM pg_notify('modelswitch_keys', encode(OLD.digest, 'hex'));
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_notify
    AFTER INSERT OR DELETE OR UPDATE OF active, expires_at, digest, user_id, kind, spend_limit, limit_reset, models ON api_keys
    FOR EACH ROW EXECUTE FUNCTION notify_key_change();
