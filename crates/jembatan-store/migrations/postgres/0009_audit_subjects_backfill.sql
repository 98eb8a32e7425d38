-- The subject index holds every subject of every entry: the lookup keys
-- of entries written before it existed are copied from
-- `audit_log.subject_hash`, so searches read the index alone.
INSERT INTO audit_subjects (subject_hash, seq)
SELECT subject_hash, seq FROM audit_log WHERE subject_hash IS NOT NULL
ON CONFLICT DO NOTHING;
