//! Moving a Medusa store to keyward: its API keys, sales channels and their links, as one
//! workflow run.
//!
//! The path has three parts, each testable on its own:
//! 1. **Read** (outside this crate: `keyward_postgres::medusa`) — Medusa's live rows as
//!    [`MedusaSnapshot`], plain strings, in a read-only transaction.
//! 2. **Check** — [`ImportSet::from_medusa`] turns every row into keyward's types, or refuses
//!    the whole snapshot with an error naming the first bad row. Nothing is written before the
//!    whole source has passed.
//! 3. **Plan and write** — [`Keyward::plan_import`] compares the set with what keyward holds
//!    (new, unchanged, different); the `import-medusa` workflow writes the plan: channels, then
//!    keys, then links, each step undone by its compensation if a later one fails. So an import
//!    is all-or-nothing, also across a crash (the next process finishes or undoes the run).
//!
//! What counts as a difference: a row that keyward would have to change to match the source.
//! keyward's own later work is not a difference: a key upgraded from its scrypt hash to the
//! digest, a `last_used_at` written, an earlier revocation. Differences are reported as
//! conflicts and left alone, unless `update` is asked for; even then a revocation is never
//! lifted or postponed (the earlier of the two wins).
//!
//! The rooms: `source` (the rows as read, and their checks), `plan` (the comparison, the
//! report, and the rules of a difference), `steps` (the workflow), `progress` (what a watched run
//! has done).

mod plan;
mod progress;
mod source;
mod steps;
#[cfg(test)]
mod tests;

pub use plan::{Conflict, ImportInput, ImportPlan, ImportReport, KeyWrites, Kind, Tally};
pub use progress::{Progress, ProgressWatch};
pub use source::{ImportSet, MedusaChannel, MedusaKey, MedusaLink, MedusaSnapshot, Skipped};
pub use steps::{
    ChannelsWritten, KeysWritten, Written, import_channels_step, import_keys_step, import_links_step,
    import_medusa_workflow, plan_import_step,
};

/// The workflow's name.
pub const IMPORT_MEDUSA: &str = "import-medusa";

/// Rows written per transaction, and per progress report.
const CHUNK: usize = 1_000;
