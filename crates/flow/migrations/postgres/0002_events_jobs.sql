-- Events, their deliveries to subscribers, and scheduled job runs.

-- Events a step emitted, held with its record until the run is done.
ALTER TABLE flow_step ADD COLUMN events JSONB;

-- The outbox: an event exists once its change is complete (its run is done).
CREATE TABLE flow_event (
    id         TEXT        NOT NULL PRIMARY KEY,
    name       TEXT        NOT NULL,
    data       JSONB       NOT NULL,
    metadata   JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX flow_event_created_idx ON flow_event (created_at);

-- Every subscriber any node has registered, with the event names it takes (JSON array; "*" for
-- all). Publishing an event writes a delivery for each one that takes it.
CREATE TABLE flow_subscriber (
    id         TEXT        NOT NULL PRIMARY KEY,
    events     JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

-- One event for one subscriber: pending until a handler succeeds. Claimed by one node at a time
-- (FOR UPDATE SKIP LOCKED, then `locked_by`/`locked_until`); a dead node's claim runs out.
CREATE TABLE flow_delivery (
    event_id        TEXT        NOT NULL REFERENCES flow_event (id) ON DELETE CASCADE,
    subscriber      TEXT        NOT NULL,
    state           TEXT        NOT NULL CHECK (state IN ('pending', 'delivered')),
    attempts        INTEGER     NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    locked_by       TEXT,
    locked_until    TIMESTAMPTZ,
    last_error      TEXT,
    delivered_at    TIMESTAMPTZ,
    PRIMARY KEY (event_id, subscriber)
);
CREATE INDEX flow_delivery_due_idx ON flow_delivery (next_attempt_at) WHERE state = 'pending';

-- One row per tick of a job: the node that inserted it ran it.
CREATE TABLE flow_job_run (
    job         TEXT        NOT NULL,
    tick        TIMESTAMPTZ NOT NULL,
    node        TEXT        NOT NULL,
    outcome     TEXT        NOT NULL CHECK (outcome IN ('running', 'succeeded', 'failed', 'skipped')),
    error       TEXT,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    -- A running run whose lease ran out belongs to a dead node.
    lease_until TIMESTAMPTZ,
    PRIMARY KEY (job, tick)
);
