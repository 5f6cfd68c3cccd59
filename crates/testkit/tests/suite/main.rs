//! The behavioural suites every store passes, one binary: the module, the workflows, the engine,
//! events, the cache, expiry, the Medusa import. One binary instead of one per file, which linked
//! both stores and the engine again for each.

mod at_rest;
mod cache;
mod expiry;
mod flow_engine;
mod flow_events;
mod least_privilege;
mod medusa_from_postgres;
mod module;
mod workflows;
