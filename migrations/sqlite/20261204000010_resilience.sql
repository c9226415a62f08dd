-- Resilience state in the store (issue 13). `limiter_budgets` holds each shared GCRA limiter's
-- theoretical arrival time (nanoseconds since the epoch): processes lease budget from it in
-- chunks, one write per chunk. `resilience_state` holds the snapshot each process publishes about
-- once a second (its limiters, breakers, concurrency limits and intake, as JSON), so every
-- process can show the cluster.
CREATE TABLE limiter_budgets (
    name TEXT PRIMARY KEY,
    tat BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE resilience_state (
    process TEXT PRIMARY KEY,
    published_at BIGINT NOT NULL,
    snapshot TEXT NOT NULL
);
