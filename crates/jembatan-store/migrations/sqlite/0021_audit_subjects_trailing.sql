-- The subject index trails the log. The audit writer no longer adds an
-- entry's subject rows in the entry's own commit: each row went in at a
-- random place of the `(subject_key, seq)` order, so an entry naming
-- 10,000 subjects (a subscription's batch, a batch verification)
-- rewrote pages of the index for every few of them. The writer now adds
-- the rows of many entries at once, sorted, from the entries themselves
-- (their canonical text names every subject), and `audit_subjects_through`
-- says how far it has come: every entry below `seq` has all its rows in
-- `audit_subjects`. A search by subject reads the index and the entries
-- from `seq` on. The rows of `audit_subjects_recent` (0018) move into
-- `audit_subjects`; everything already stored was indexed when written.
INSERT OR IGNORE INTO audit_subjects (subject_key, seq)
SELECT subject_key, seq FROM audit_subjects_recent;

-- dropping a table drops its triggers and fires none
DROP TABLE audit_subjects_recent;

CREATE TABLE audit_subjects_through (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL CHECK (seq >= 0)
);

INSERT INTO audit_subjects_through (id, seq)
SELECT 1, max(COALESCE((SELECT MAX(seq) + 1 FROM audit_log), 0),
              COALESCE((SELECT MAX(up_to) FROM audit_archives), 0));

CREATE TRIGGER audit_subjects_through_forward BEFORE UPDATE ON audit_subjects_through
WHEN NEW.seq < OLD.seq OR NEW.id <> OLD.id
BEGIN
    SELECT RAISE(ABORT, 'audit_subjects_through only moves forward');
END;
CREATE TRIGGER audit_subjects_through_kept BEFORE DELETE ON audit_subjects_through
BEGIN
    SELECT RAISE(ABORT, 'audit_subjects_through is kept');
END;
