-- keyward-flow's run log on PostgreSQL: one row per workflow run, one per step of it.
--
-- Several nodes share these tables. A run is held by one node (`owner`) until `lease_until`,
-- which the owner keeps pushing forward; leases are compared with the database's clock, so
-- nodes need not agree on the time. This history is kept in its own table
-- (_flow_migrations), apart from the application's. Applied migrations are never edited.

CREATE TABLE flow_run (
    workflow       TEXT        NOT NULL,
    transaction_id TEXT        NOT NULL,
    state          TEXT        NOT NULL
        CHECK (state IN ('running', 'compensating', 'done', 'reverted', 'failed')),
    input          JSONB       NOT NULL,
    result         JSONB,
    -- [{step, handler: invoke|compensate, error}]
    errors         JSONB       NOT NULL DEFAULT '[]',
    owner          TEXT,
    lease_until    TIMESTAMPTZ,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (workflow, transaction_id)
);
CREATE INDEX flow_run_unfinished_idx ON flow_run (lease_until)
    WHERE state IN ('running', 'compensating');
CREATE INDEX flow_run_updated_idx ON flow_run (updated_at);

-- A step of a run, written before it is invoked (state 'invoking', with its input) and again
-- when it finishes or is compensated.
CREATE TABLE flow_step (
    workflow           TEXT        NOT NULL,
    transaction_id     TEXT        NOT NULL,
    step               TEXT        NOT NULL,
    position           INTEGER     NOT NULL,
    state              TEXT        NOT NULL
        CHECK (state IN ('invoking', 'done', 'skipped', 'failed', 'compensated', 'compensation_failed')),
    attempts           INTEGER     NOT NULL DEFAULT 0,
    input              JSONB,
    output             JSONB,
    compensation_input JSONB,
    error              TEXT,
    updated_at         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (workflow, transaction_id, step),
    FOREIGN KEY (workflow, transaction_id) REFERENCES flow_run (workflow, transaction_id) ON DELETE CASCADE
);
