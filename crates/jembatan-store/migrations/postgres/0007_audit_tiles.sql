-- Hash tiles of the audit log's Merkle tree, PostgreSQL (C2SP tlog-tiles
-- layout, height 8): the row (level, idx) holds the hashes of the tree's
-- nodes at height 8*level numbered 256*idx onwards, 32 bytes each, at most
-- 256. Full tiles never change; the partial tile at the right edge of each
-- level is rewritten only ever longer. Tiles are derived from audit_log
-- (which stays as it is) and checked against signed checkpoints before any
-- proof made from them is served.
CREATE TABLE audit_tiles (
    level  BIGINT NOT NULL,
    idx    BIGINT NOT NULL,
    hashes BYTEA NOT NULL,
    PRIMARY KEY (level, idx)
);
