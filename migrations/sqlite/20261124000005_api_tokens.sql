-- API tokens for scripts (app/src/tokens.rs). Only the SHA-256 of a token is stored; the token
-- itself is shown once, when it is created. Rows are revoked, never deleted, so the audit log's
-- references stay meaningful.
CREATE TABLE api_tokens (
    id            TEXT    PRIMARY KEY NOT NULL,
    name          TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    secret_sha256 TEXT    NOT NULL,
    created_by    TEXT    NOT NULL,
    created_ms    BIGINT  NOT NULL,
    expires_ms    BIGINT  NOT NULL,
    last_used_ms  BIGINT,
    revoked_ms    BIGINT
);
