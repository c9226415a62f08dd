-- Critical sections (entities.md rules 14 to 20): an entity row now also exists while the entity
-- is locked or has messages waiting behind its lock, with or without state ("transient").
-- `scheduler` is the lock, the last epoch and the waiting messages (engine_core::lock), NULL when
-- there are none; `locked_by` and `deferred` repeat what queries filter and show. `recent` is the
-- last operations run (a bounded JSON list, for the dashboard).
CREATE TABLE entities_v9 (
    entity_id     TEXT    PRIMARY KEY NOT NULL,
    name          TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    state         TEXT,
    last_modified INTEGER NOT NULL,
    scheduler     TEXT,
    locked_by     TEXT,
    deferred      INTEGER NOT NULL DEFAULT 0,
    recent        TEXT
);
INSERT INTO entities_v9 (entity_id, name, key, state, last_modified)
    SELECT entity_id, name, key, state, last_modified FROM entities;
DROP TABLE entities;
ALTER TABLE entities_v9 RENAME TO entities;
CREATE INDEX entities_by_name ON entities (name, key);
CREATE INDEX entities_by_modified ON entities (last_modified);
-- Clean storage looks for locks whose holder is gone.
CREATE INDEX entities_locked ON entities (locked_by) WHERE locked_by IS NOT NULL;
