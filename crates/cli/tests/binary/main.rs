//! The `keyward` binary's integration tests, one test binary: each module drives the real binary
//! (and real databases) as a user or an operator would. One binary instead of one per file, which
//! linked the whole program again for each.

mod cli;
mod crash;
mod medusa_from_postgres;
mod policy;
mod propagation;
mod races;
mod run;
mod serve;
mod takeover;
mod webhooks;
