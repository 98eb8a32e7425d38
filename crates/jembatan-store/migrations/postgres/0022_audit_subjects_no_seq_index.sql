-- The subject index is kept in `(subject_key, seq)` order only. Its index
-- by `seq` served one thing, deleting archived entries' rows by range, and
-- cost a second B-tree insert for every subject an entry names. Archiving
-- now finds an entry's rows from the subjects its canonical text names
-- and deletes them by key.
DROP INDEX audit_subjects_by_seq;
