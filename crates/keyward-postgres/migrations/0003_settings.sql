-- Deployment-wide settings every node must share, written once (the first writer wins): the
-- login-token signing secret when none is configured.
CREATE TABLE keyward_setting (
    name       TEXT        NOT NULL PRIMARY KEY,
    value      TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
