-- keyward on PostgreSQL: API keys, sales channels, the links between them, and admin users.
-- Several keyward nodes may share this database. Applied migrations are never edited; change the
-- schema with a new file.

-- A key. `token` is the plain token for publishable keys (public by design) and the SHA-256 of
-- the token (hex) for secret keys: the plain secret is never stored. `salt` is non-empty only for
-- secret keys imported from Medusa, whose `token` is then their scrypt hash.
CREATE TABLE api_key (
    id           text        NOT NULL PRIMARY KEY,
    token        text        NOT NULL,
    salt         text        NOT NULL DEFAULT '',
    redacted     text        NOT NULL,
    title        text        NOT NULL,
    type         text        NOT NULL CONSTRAINT api_key_type_check CHECK (type IN ('publishable', 'secret')),
    last_used_at timestamptz,
    created_by   text        NOT NULL DEFAULT '',
    revoked_by   text,
    -- In the future: a scheduled revocation; the key works until then.
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    -- Deletes are hard; kept for Medusa's response shape and filters.
    deleted_at   timestamptz,
    CONSTRAINT api_key_token_key UNIQUE (token)
);
CREATE INDEX api_key_type_idx ON api_key (type);
CREATE INDEX api_key_revoked_at_idx ON api_key (revoked_at);
CREATE INDEX api_key_redacted_idx ON api_key (redacted);

CREATE TABLE sales_channel (
    id          text        NOT NULL PRIMARY KEY,
    name        text        NOT NULL,
    description text,
    is_disabled boolean     NOT NULL DEFAULT false,
    metadata    jsonb,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    deleted_at  timestamptz
);

-- Which sales channels a publishable key may see. Unlinking sets deleted_at; linking again
-- clears it. Deleting a key or a channel removes its rows.
CREATE TABLE publishable_api_key_sales_channel (
    publishable_key_id text        NOT NULL REFERENCES api_key (id) ON DELETE CASCADE,
    sales_channel_id   text        NOT NULL REFERENCES sales_channel (id) ON DELETE CASCADE,
    created_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    deleted_at         timestamptz,
    PRIMARY KEY (publishable_key_id, sales_channel_id)
);
CREATE INDEX publishable_api_key_sales_channel_sales_channel_idx
    ON publishable_api_key_sales_channel (sales_channel_id);

-- Admin users. `email` is stored lower-cased; `password_hash` is an Argon2id PHC string.
CREATE TABLE admin_user (
    id            text        NOT NULL PRIMARY KEY,
    email         text        NOT NULL CONSTRAINT admin_user_email_key UNIQUE,
    first_name    text,
    last_name     text,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL,
    deleted_at    timestamptz
);

-- Facts about the database itself, e.g. that the first-start seed was written.
CREATE TABLE keyward_meta (
    key   text NOT NULL PRIMARY KEY,
    value text NOT NULL
);
