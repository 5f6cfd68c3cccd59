-- keyward on SQLite: API keys, sales channels, the links between them, and admin users.
--
-- Instants are INTEGER milliseconds since the Unix epoch, UTC: they compare and sort as numbers,
-- which filters (`created_at > ?`) and ordering rely on. Applied migrations are never edited;
-- change the schema with a new file.

-- A key. `token` is the plain token for publishable keys (public by design) and the SHA-256 of
-- the token (hex) for secret keys: the plain secret is never stored. `salt` is non-empty only for
-- secret keys imported from Medusa, whose `token` is then their scrypt hash.
CREATE TABLE api_key (
    id           TEXT    NOT NULL PRIMARY KEY,
    token        TEXT    NOT NULL,
    salt         TEXT    NOT NULL DEFAULT '',
    redacted     TEXT    NOT NULL,
    title        TEXT    NOT NULL,
    type         TEXT    NOT NULL CHECK (type IN ('publishable', 'secret')),
    last_used_at INTEGER,
    created_by   TEXT    NOT NULL DEFAULT '',
    revoked_by   TEXT,
    -- In the future: a scheduled revocation; the key works until then.
    revoked_at   INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    -- Deletes are hard; kept for Medusa's response shape and filters.
    deleted_at   INTEGER
);
CREATE UNIQUE INDEX api_key_token_key ON api_key (token);
CREATE INDEX api_key_type_idx ON api_key (type);
CREATE INDEX api_key_revoked_at_idx ON api_key (revoked_at);
CREATE INDEX api_key_redacted_idx ON api_key (redacted);

CREATE TABLE sales_channel (
    id          TEXT    NOT NULL PRIMARY KEY,
    name        TEXT    NOT NULL,
    description TEXT,
    is_disabled INTEGER NOT NULL DEFAULT 0 CHECK (is_disabled IN (0, 1)),
    -- JSON object or NULL.
    metadata    TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    deleted_at  INTEGER
);

-- Which sales channels a publishable key may see. Unlinking sets deleted_at; linking again
-- clears it. Deleting a key or a channel removes its rows.
CREATE TABLE publishable_api_key_sales_channel (
    publishable_key_id TEXT    NOT NULL REFERENCES api_key (id) ON DELETE CASCADE,
    sales_channel_id   TEXT    NOT NULL REFERENCES sales_channel (id) ON DELETE CASCADE,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    deleted_at         INTEGER,
    PRIMARY KEY (publishable_key_id, sales_channel_id)
);
CREATE INDEX publishable_api_key_sales_channel_sales_channel_idx
    ON publishable_api_key_sales_channel (sales_channel_id);

-- Admin users. `email` is stored lower-cased; `password_hash` is an Argon2id PHC string.
CREATE TABLE admin_user (
    id            TEXT    NOT NULL PRIMARY KEY,
    email         TEXT    NOT NULL,
    first_name    TEXT,
    last_name     TEXT,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    deleted_at    INTEGER
);
CREATE UNIQUE INDEX admin_user_email_key ON admin_user (email);

-- Facts about the database itself, e.g. that the first-start seed was written.
CREATE TABLE keyward_meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
);
