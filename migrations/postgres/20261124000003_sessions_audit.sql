-- Login sessions, in the schema and table tower-sessions' PostgreSQL store reads and writes (the
-- server never calls the store's own `migrate`: the schema lives here, with the rest).
CREATE SCHEMA tower_sessions;
CREATE TABLE tower_sessions.session (
    id          TEXT        PRIMARY KEY NOT NULL,
    data        BYTEA       NOT NULL,
    expiry_date TIMESTAMPTZ NOT NULL
);

-- Every mutating action taken through the dashboard or the API: who, when, on what, why, and
-- whether it worked. Rows are only ever inserted.
CREATE TABLE audit_log (
    id      BIGSERIAL PRIMARY KEY,
    at_ms   BIGINT    NOT NULL,
    actor   TEXT      NOT NULL,
    role    TEXT      NOT NULL,
    action  TEXT      NOT NULL,
    target  TEXT      NOT NULL,
    reason  TEXT      NOT NULL,
    outcome TEXT      NOT NULL,
    detail  TEXT
);
CREATE INDEX audit_log_action ON audit_log (action, id);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
