-- The engine's tables. One row per instance, its history, and three queues: messages for
-- orchestrations (delivered in id order), timers (delivered when due) and activities.

CREATE TABLE instances (
    instance_id        TEXT    PRIMARY KEY NOT NULL,
    name               TEXT    NOT NULL,
    version            TEXT    NOT NULL DEFAULT '',
    status             TEXT    NOT NULL,
    input              TEXT,
    output             TEXT,
    custom_status      TEXT,
    failure            TEXT,
    tags               TEXT    NOT NULL DEFAULT '{}',
    parent_instance_id TEXT,
    generation         INTEGER NOT NULL DEFAULT 0,
    history_len        INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    completed_at       INTEGER,
    scheduled_start_at INTEGER,
    waiting_event      TEXT,
    waiting_since      INTEGER,
    waiting_deadline   INTEGER
);
CREATE INDEX instances_by_created ON instances (created_at, instance_id);
CREATE INDEX instances_by_updated ON instances (updated_at, instance_id);
CREATE INDEX instances_by_status ON instances (status, created_at, instance_id);
CREATE INDEX instances_by_name ON instances (name, status, created_at, instance_id);
CREATE INDEX instances_by_waiting ON instances (waiting_event, waiting_since)
    WHERE waiting_event IS NOT NULL;
CREATE INDEX instances_by_parent ON instances (parent_instance_id)
    WHERE parent_instance_id IS NOT NULL;

-- One row per turn: `events` is a JSON array of the turn's events, the first of which has
-- sequence number `seq`. Fewer, larger rows make a group commit of many turns cheaper. A rowid
-- table on purpose: the rows (hundreds of bytes) are appended in commit order, and only the
-- small primary-key index takes the scattered inserts.
CREATE TABLE history (
    instance_id TEXT    NOT NULL,
    seq         INTEGER NOT NULL,
    events      TEXT    NOT NULL,
    PRIMARY KEY (instance_id, seq)
);

CREATE TABLE messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT    NOT NULL,
    body        TEXT    NOT NULL
);
CREATE INDEX messages_by_instance ON messages (instance_id, id);

CREATE TABLE timers (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT    NOT NULL,
    fire_at     INTEGER NOT NULL,
    body        TEXT    NOT NULL
);
CREATE INDEX timers_by_due ON timers (fire_at, id);
CREATE INDEX timers_by_instance ON timers (instance_id);

CREATE TABLE activities (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id  TEXT    NOT NULL,
    scheduled_id INTEGER NOT NULL,
    name         TEXT    NOT NULL,
    input        TEXT    NOT NULL
);
CREATE INDEX activities_by_instance ON activities (instance_id);

-- Counts per status, maintained with every status change so the dashboard never counts rows.
CREATE TABLE status_counts (
    status TEXT    PRIMARY KEY NOT NULL,
    count  INTEGER NOT NULL
);
INSERT INTO status_counts (status, count) VALUES
    ('Pending', 0), ('Running', 0), ('Suspended', 0), ('Completed', 0), ('Failed', 0),
    ('Terminated', 0), ('Canceled', 0), ('ContinuedAsNew', 0);
