-- Query streams per consumer and provider, counted across replicas, SQLite.
--
-- An open exchange that is a query stream names its provider once it is
-- allowed: `max_streams_per_provider` counts the rows of one consumer and
-- provider on replicas not gone, as `max_streams_per_agency` counts one
-- consumer's. The provider is cleared when the adapter's stream is over,
-- and the row goes when the exchange ends.
ALTER TABLE open_exchanges ADD COLUMN provider TEXT;
CREATE INDEX open_exchanges_by_provider ON open_exchanges (consumer, provider);
