-- Quota counters: one row per agreement, quota and window (a UTC day for
-- rows_per_day, a UTC minute for requests_per_minute). Every broker
-- replica sharing the store counts in the same rows, and the counters
-- survive restarts.
CREATE TABLE quota_usage (
    agreement_id TEXT NOT NULL,
    quota        TEXT NOT NULL,
    window_start TEXT NOT NULL,
    used         BIGINT NOT NULL,
    PRIMARY KEY (agreement_id, quota, window_start)
);

CREATE INDEX agreements_by_update ON agreements (updated_at);
