-- The keys each subscription has been given, one row per recorded batch
-- instead of one per key and batch (0016): a batch's gifts and takebacks
-- are appended as two packed arrays of 32-byte keyed hashes, so recording
-- a batch writes at the end of the table, not at ten thousand random
-- places of a key-ordered index. What a subscription holds is the fold of
-- its rows in batch order; a resumed stream drops the rows after its
-- cursor's batch, and history older than the resumable window is folded
-- into rows of one batch (several parts when large).
CREATE TABLE subscription_key_batches (
    subscription_id TEXT NOT NULL,
    batch           BIGINT NOT NULL,
    -- a batch's keys in parts of at most 20,000 (folded history only)
    part            BIGINT NOT NULL,
    -- 32-byte HMAC-SHA-256 key hashes, concatenated
    given           BYTEA NOT NULL,
    taken           BYTEA NOT NULL,
    PRIMARY KEY (subscription_id, batch, part)
);

INSERT INTO subscription_key_batches (subscription_id, batch, part, given, taken)
SELECT subscription_id, batch, 0,
       COALESCE(decode(string_agg(key_hash, '') FILTER (WHERE given = 1), 'hex'), '\x'::bytea),
       COALESCE(decode(string_agg(key_hash, '') FILTER (WHERE given = 0), 'hex'), '\x'::bytea)
FROM subscription_key_events
GROUP BY subscription_id, batch;

DROP TABLE subscription_key_events;
