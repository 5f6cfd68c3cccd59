-- keyward-flow's run log on SQLite: one row per workflow run, one per step of it.
--
-- Instants are INTEGER milliseconds since the Unix epoch; JSON is TEXT. This history is kept in
-- its own table (_flow_migrations), apart from the application's. Applied migrations are never
-- edited.

-- A run. `owner` and `lease_until` hold it for one process while it is running or compensating;
-- when the lease runs out, any process that has the workflow registered may take it over.
CREATE TABLE flow_run (
    workflow       TEXT    NOT NULL,
    transaction_id TEXT    NOT NULL,
    state          TEXT    NOT NULL
        CHECK (state IN ('running', 'compensating', 'done', 'reverted', 'failed')),
    input          TEXT    NOT NULL,
    result         TEXT,
    -- [{step, handler: invoke|compensate, error}]
    errors         TEXT    NOT NULL DEFAULT '[]',
    owner          TEXT,
    lease_until    INTEGER,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (workflow, transaction_id)
);
CREATE INDEX flow_run_unfinished_idx ON flow_run (lease_until)
    WHERE state IN ('running', 'compensating');
CREATE INDEX flow_run_updated_idx ON flow_run (updated_at);

-- A step of a run, written before it is invoked (state 'invoking', with its input) and again
-- when it finishes or is compensated.
CREATE TABLE flow_step (
    workflow           TEXT    NOT NULL,
    transaction_id     TEXT    NOT NULL,
    step               TEXT    NOT NULL,
    position           INTEGER NOT NULL,
    state              TEXT    NOT NULL
        CHECK (state IN ('invoking', 'done', 'skipped', 'failed', 'compensated', 'compensation_failed')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    input              TEXT,
    output             TEXT,
    compensation_input TEXT,
    error              TEXT,
    updated_at         INTEGER NOT NULL,
    PRIMARY KEY (workflow, transaction_id, step),
    FOREIGN KEY (workflow, transaction_id) REFERENCES flow_run (workflow, transaction_id) ON DELETE CASCADE
);
