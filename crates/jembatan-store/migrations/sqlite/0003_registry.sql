-- The schema registry: per-dataset settings, schema documents by content id,
-- numbered versions and mappings between versions.
CREATE TABLE registry_datasets (
    dataset           TEXT PRIMARY KEY,
    -- NULL: the registry's default mode.
    compatibility     TEXT,
    optional_friendly INTEGER NOT NULL DEFAULT 0,
    updated_at        TEXT NOT NULL
);

-- One row per distinct schema; schema_id is derived from the canonical
-- document, so registering the same content twice finds the same row.
CREATE TABLE schemas (
    schema_id TEXT PRIMARY KEY,
    document  TEXT NOT NULL
);

CREATE TABLE schema_versions (
    dataset       TEXT NOT NULL REFERENCES registry_datasets (dataset),
    version       INTEGER NOT NULL,
    schema_id     TEXT NOT NULL REFERENCES schemas (schema_id),
    state         TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    registered_by TEXT NOT NULL,
    PRIMARY KEY (dataset, version)
);
CREATE INDEX schema_versions_by_id ON schema_versions (schema_id);

-- A mapping translates records of `source` (dataset@version) into
-- `target`; each (source, target) pair has numbered versions.
CREATE TABLE mappings (
    source        TEXT NOT NULL,
    target        TEXT NOT NULL,
    version       INTEGER NOT NULL,
    document      TEXT NOT NULL,
    registered_at TEXT NOT NULL,
    registered_by TEXT NOT NULL,
    PRIMARY KEY (source, target, version)
);
