-- A counter of changes to what decisions read (agencies, datasets,
-- agreements), bumped by triggers in the same transaction as the change.
-- A broker serves decisions from memory and reads only this counter per
-- decision: when it moved, the memory is dropped before it is used, so a
-- revocation is never honoured once its write has committed.
CREATE TABLE policy_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);

CREATE TRIGGER agencies_policy_insert AFTER INSERT ON agencies BEGIN
    INSERT INTO policy_version (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER agencies_policy_update AFTER UPDATE ON agencies BEGIN
    INSERT INTO policy_version (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER agencies_policy_delete AFTER DELETE ON agencies BEGIN
    INSERT INTO policy_version (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER datasets_policy_insert AFTER INSERT ON datasets BEGIN
    INSERT INTO policy_version (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER datasets_policy_update AFTER UPDATE ON datasets BEGIN
    INSERT INTO policy_version (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER datasets_policy_delete AFTER DELETE ON datasets BEGIN
    INSERT INTO policy_version (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER agreements_policy_insert AFTER INSERT ON agreements BEGIN
    INSERT INTO policy_version (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER agreements_policy_update AFTER UPDATE ON agreements BEGIN
    INSERT INTO policy_version (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER agreements_policy_delete AFTER DELETE ON agreements BEGIN
    INSERT INTO policy_version (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = n + 1;
END;
