-- Bulk actions (app/src/routes/bulk.rs): the job, and every instance it covers with its outcome
-- once done (NULL until then; 'ok' or the engine's refusal). Written before the job starts, so
-- progress survives a restart and the server resumes unfinished jobs at start-up.
CREATE TABLE bulk_jobs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    action      TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    actor       TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    total       BIGINT  NOT NULL,
    created_ms  BIGINT  NOT NULL,
    finished_ms BIGINT
);
CREATE TABLE bulk_job_items (
    job_id      BIGINT  NOT NULL REFERENCES bulk_jobs (id) ON DELETE CASCADE,
    instance_id TEXT    NOT NULL,
    outcome     TEXT,
    PRIMARY KEY (job_id, instance_id)
);
