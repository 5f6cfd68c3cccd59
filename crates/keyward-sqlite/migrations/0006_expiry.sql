-- Keys that expire: at `expires_at` (milliseconds since the epoch) a key stops verifying, as a
-- revoked one does. NULL (every key before this migration) never expires.
ALTER TABLE api_key ADD COLUMN expires_at INTEGER;
CREATE INDEX api_key_expires_at_idx ON api_key (expires_at) WHERE expires_at IS NOT NULL;
