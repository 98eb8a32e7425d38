-- Signed checkpoints of the audit log's Merkle tree, SQLite.
-- size is the tree size (number of entries) the note commits to; root_hash
-- is its root in lowercase hex; note is the signed C2SP checkpoint note.
CREATE TABLE checkpoints (
    size       BIGINT PRIMARY KEY,
    root_hash  TEXT NOT NULL,
    note       TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'checkpoints are append-only');
END;
CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
BEGIN
    SELECT RAISE(ABORT, 'checkpoints are append-only');
END;
