-- Idempotency-Key records. The key is stored only as a digest (with the actor); the answer of
-- the first request only sealed under a key derived from the client's Idempotency-Key, so this
-- table never holds a plain secret token.
CREATE TABLE idempotency_key (
    key_digest     TEXT        NOT NULL PRIMARY KEY,
    request_digest TEXT        NOT NULL,
    status         INTEGER,
    response       TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX idempotency_key_expires_idx ON idempotency_key (expires_at);
