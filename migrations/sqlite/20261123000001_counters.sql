-- Named counters: the first value the dashboard reads and writes through a server function.
-- It proves the whole path (SSR, hydration, server function, database) on a fresh install.
CREATE TABLE counters (
    name       TEXT    PRIMARY KEY NOT NULL,
    value      BIGINT  NOT NULL DEFAULT 0
);
