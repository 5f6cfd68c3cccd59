//! The server's integration tests, one binary: each module a suite over a real socket (SQLite and
//! Postgres). One binary instead of one per file: each links the whole server once, which was most
//! of the test build's time on two cores.

#[macro_use]
mod support;

mod activity;
mod api;
mod auth_walk;
mod bounds;
mod csrf;
mod dashboard;
mod idempotency;
mod layers;
mod least_privilege;
mod lockout;
mod openapi;
mod operations;
mod policy;
mod races;
mod sessions;
mod tokens;
