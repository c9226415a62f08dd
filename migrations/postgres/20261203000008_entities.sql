-- Durable entities: one row per entity that has state. Operations for an entity queue in
-- `messages` (or `timers`, when scheduled) under its id, `@name@key`, as an instance's messages
-- do; an entity without state and without queued operations has no row (entities.md rule 13).
CREATE TABLE entities (
    entity_id     TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    last_modified BIGINT  NOT NULL
);
-- Queries by name and key prefix, and by last modification.
CREATE INDEX entities_by_name ON entities (name, key);
CREATE INDEX entities_by_modified ON entities (last_modified);
