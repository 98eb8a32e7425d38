-- Change subscriptions, and the keys each has been given, as a history
-- that a resumed stream rewinds to its cursor's batch.
--
-- A row that leaves a subscription's scope becomes a delete only for a
-- key the subscription was given, and a row never in its scope produces
-- nothing. Whether a key was given must be known as of the consumer's
-- cursor, which may be behind what the broker last sent (batches lost
-- in flight): each batch's gifts and takebacks are events numbered by
-- the batch, and a stream resumed at batch n drops the events after n.
-- Keys appear only as keyed hashes (HMAC-SHA-256 under the broker's
-- audit key); the table of 0014 held the current set only and is
-- replaced.
DROP TABLE subscription_keys;

CREATE TABLE subscriptions (
    subscription_id TEXT PRIMARY KEY,
    -- the last batch recorded: the next is this plus one
    last_batch      INTEGER NOT NULL,
    -- cursors of batches before this can no longer be resumed: their
    -- history was compacted
    horizon         INTEGER NOT NULL,
    -- bumped by every resume: only the stream resumed last records
    generation      INTEGER NOT NULL
);

CREATE TABLE subscription_key_events (
    subscription_id TEXT NOT NULL,
    key_hash        TEXT NOT NULL,
    batch           INTEGER NOT NULL,
    -- 1: the key was given (an upsert delivered); 0: taken back (a delete)
    given           INTEGER NOT NULL,
    PRIMARY KEY (subscription_id, key_hash, batch)
);
