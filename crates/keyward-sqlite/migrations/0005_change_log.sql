-- The change log: every write that makes a cached verification fact stale adds a row here in
-- its own transaction, and every process on this file reads the rows after the last one it saw
-- (keyward::cache). SQLite runs one write transaction at a time, so `seq` order is commit order.
-- Each write removes the rows older than two minutes.
CREATE TABLE keyward_change (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    payload TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX keyward_change_created_idx ON keyward_change (created_at);
