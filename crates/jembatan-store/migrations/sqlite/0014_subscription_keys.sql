-- The keys each change subscription has been given, as keyed hashes
-- (HMAC-SHA-256 under the broker's audit key; never a key in clear): a row
-- that leaves a subscription's scope becomes a delete only for a key
-- the subscription was given, and a row never in its scope produces
-- nothing. One row per subscription and key delivered and not deleted
-- since.
CREATE TABLE subscription_keys (
    subscription_id TEXT NOT NULL,
    key_hash        TEXT NOT NULL,
    PRIMARY KEY (subscription_id, key_hash)
);
