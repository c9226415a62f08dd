-- Critical sections (entities.md rules 14 to 20): an entity row now also exists while the entity
-- is locked or has messages waiting behind its lock, with or without state ("transient").
-- `scheduler` is the lock, the last epoch and the waiting messages (engine_core::lock), NULL when
-- there are none; `locked_by` and `deferred` repeat what queries filter and show. `recent` is the
-- last operations run (a bounded JSON list, for the dashboard).
ALTER TABLE entities ALTER COLUMN state DROP NOT NULL;
ALTER TABLE entities ADD COLUMN scheduler TEXT;
ALTER TABLE entities ADD COLUMN locked_by TEXT;
ALTER TABLE entities ADD COLUMN deferred BIGINT NOT NULL DEFAULT 0;
ALTER TABLE entities ADD COLUMN recent TEXT;
CREATE INDEX entities_locked ON entities (locked_by) WHERE locked_by IS NOT NULL;
