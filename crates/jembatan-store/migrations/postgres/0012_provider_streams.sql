-- Query streams per consumer and provider, counted across replicas, PostgreSQL.
--
-- An open exchange that is a query stream names its provider once it is
-- allowed: `max_streams_per_provider` counts the rows of one consumer and
-- provider on replicas not gone, as `max_streams_per_agency` counts one
-- consumer's. The provider is cleared when the adapter's stream is over,
-- and the row goes when the exchange ends.
ALTER TABLE open_exchanges ADD COLUMN provider TEXT;
CREATE INDEX open_exchanges_by_provider ON open_exchanges (consumer, provider);

-- Names `p_provider` on the open exchange `p_exchange` unless its consumer
-- already has `p_limit` streams against that provider open on replicas
-- not gone (lease not over by more than `p_grace_ms`). Serialized per
-- consumer and provider by a transaction-scoped advisory lock, as
-- `jembatan_open_exchange` is per consumer. Returns whether it was taken.
CREATE FUNCTION jembatan_take_provider_stream(
    p_exchange TEXT, p_consumer TEXT, p_provider TEXT, p_limit BIGINT, p_grace_ms BIGINT
) RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
    now_ms BIGINT := (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT;
    running BIGINT;
    taken BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(
        hashtextextended('jembatan.provider_streams/' || p_consumer || '/' || p_provider, 0));
    SELECT COUNT(*) INTO running
    FROM open_exchanges o JOIN replicas r ON r.id = o.replica
    WHERE o.consumer = p_consumer AND o.provider = p_provider AND r.gone_at IS NULL
      AND r.lease_until + p_grace_ms >= now_ms;
    IF running >= p_limit THEN
        RETURN FALSE;
    END IF;
    UPDATE open_exchanges SET provider = p_provider
    WHERE exchange_id = p_exchange AND consumer = p_consumer;
    GET DIAGNOSTICS taken = ROW_COUNT;
    RETURN taken = 1;
END;
$$;
