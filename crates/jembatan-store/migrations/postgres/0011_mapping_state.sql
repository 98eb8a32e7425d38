-- A mapping version can be disabled (and made active again) like a schema
-- version: a version that breaks on real records is taken out of use and
-- the newest version still active serves exchanges again.
ALTER TABLE mappings ADD COLUMN state TEXT NOT NULL DEFAULT 'active'
    CHECK (state IN ('active', 'deprecated', 'disabled'));
