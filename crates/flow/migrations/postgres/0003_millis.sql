-- The log keeps instants as milliseconds since the Unix epoch, read from the engine's clock,
-- and counts as BIGINT: the same columns as on SQLite, so one set of statements serves both
-- backends. Existing values are converted in place.

ALTER TABLE flow_run
    ALTER COLUMN lease_until TYPE BIGINT USING (extract(epoch FROM lease_until) * 1000)::bigint,
    ALTER COLUMN created_at  TYPE BIGINT USING (extract(epoch FROM created_at) * 1000)::bigint,
    ALTER COLUMN updated_at  TYPE BIGINT USING (extract(epoch FROM updated_at) * 1000)::bigint;

ALTER TABLE flow_step
    ALTER COLUMN position   TYPE BIGINT,
    ALTER COLUMN attempts   TYPE BIGINT,
    ALTER COLUMN updated_at TYPE BIGINT USING (extract(epoch FROM updated_at) * 1000)::bigint;

ALTER TABLE flow_event
    ALTER COLUMN created_at TYPE BIGINT USING (extract(epoch FROM created_at) * 1000)::bigint;

ALTER TABLE flow_subscriber
    ALTER COLUMN created_at TYPE BIGINT USING (extract(epoch FROM created_at) * 1000)::bigint,
    ALTER COLUMN updated_at TYPE BIGINT USING (extract(epoch FROM updated_at) * 1000)::bigint;

ALTER TABLE flow_delivery
    ALTER COLUMN attempts        TYPE BIGINT,
    ALTER COLUMN next_attempt_at TYPE BIGINT USING (extract(epoch FROM next_attempt_at) * 1000)::bigint,
    ALTER COLUMN locked_until    TYPE BIGINT USING (extract(epoch FROM locked_until) * 1000)::bigint,
    ALTER COLUMN delivered_at    TYPE BIGINT USING (extract(epoch FROM delivered_at) * 1000)::bigint;

ALTER TABLE flow_job_run
    ALTER COLUMN tick        TYPE BIGINT USING (extract(epoch FROM tick) * 1000)::bigint,
    ALTER COLUMN started_at  TYPE BIGINT USING (extract(epoch FROM started_at) * 1000)::bigint,
    ALTER COLUMN finished_at TYPE BIGINT USING (extract(epoch FROM finished_at) * 1000)::bigint,
    ALTER COLUMN lease_until TYPE BIGINT USING (extract(epoch FROM lease_until) * 1000)::bigint;
