-- Keys that expire: at `expires_at` (milliseconds since the epoch) a key stops verifying, as a
-- revoked one does. NULL (every key before this migration) never expires.
ALTER TABLE api_key ADD COLUMN expires_at INTEGER;
CREATE INDEX api_key_expires_at_idx ON api_key (expires_at) WHERE expires_at IS NOT NULL;

-- The expiry notices sent, each once per key and expiry instant: `expiring` (a set time before)
-- and `expired` (at the instant). A notice belongs to the workflow run that sent it, so a run
-- resumed after a crash recognises its own and one that failed gives them up.
CREATE TABLE api_key_notice (
    api_key_id     TEXT    NOT NULL,
    kind           TEXT    NOT NULL CHECK (kind IN ('expiring', 'expired')),
    expires_at     INTEGER NOT NULL,
    transaction_id TEXT    NOT NULL,
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (api_key_id, kind, expires_at)
);
CREATE INDEX api_key_notice_transaction_idx ON api_key_notice (transaction_id);
