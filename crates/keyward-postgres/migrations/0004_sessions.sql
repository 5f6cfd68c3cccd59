-- Admin login sessions: every login token names one. Logging out, deleting the user or
-- changing its password ends them on every node.
CREATE TABLE admin_session (
    id         TEXT        NOT NULL PRIMARY KEY,
    user_id    TEXT        NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    ended_at   TIMESTAMPTZ
);
CREATE INDEX admin_session_user_idx ON admin_session (user_id);
