//! keyward-flow: durable workflows — steps with compensation, composed in sequence, in parallel
//! and under conditions, with hook points — whose every step is written to a run log (SQLite or
//! Postgres) as it happens, so a crash never leaves half a change behind: a restarted process, or
//! another node once the dead one's lease runs out, finishes the run forward or compensates it.
//!
//! It knows nothing of API keys: the container a workflow runs against is a type parameter.
//!
//! ```no_run
//! use std::sync::Arc;
//! use keyward_flow::{Engine, RunOptions, Step, StepContext, StepResponse, Workflow};
//!
//! struct Shop; // the services your steps use
//!
//! # async fn demo(pool: sqlx::SqlitePool) -> Result<(), keyward_flow::FlowError> {
//! let reserve = Step::new("reserve", |n: u32, _cx: StepContext<Shop>| async move {
//!     Ok(StepResponse::new(n))
//! })
//! .compensate(|n: Option<u32>, _cx| async move {
//!     println!("release {n:?}");
//!     Ok(())
//! });
//! let engine = Engine::new(Shop, Arc::new(keyward_flow::SqliteLog::new(pool)));
//! engine.migrate().await?;
//! let order = engine.register(
//!     Workflow::<Shop, u32, u32>::new("order").step(&reserve, |d| d.input()).returns(move |d| d.output(&reserve)),
//! )?;
//! let run = engine.run(&order, 3, RunOptions::default()).await?;
//! assert_eq!(run.result, Some(3));
//! # Ok(()) }
//! ```

pub mod clock;
mod dispatch;
mod engine;
mod error;
pub mod events;
mod fault;
pub mod ids;
pub mod jobs;
mod log;
#[cfg(feature = "postgres")]
mod postgres;
mod schedule;
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod step;
mod workflow;

pub use clock::{Clock, ManualClock, SystemClock};
pub use engine::{DEFAULT_LEASE, Engine, RESULT_STEP, RunOptions, RunResult, WorkflowHandle};
pub use error::{FlowError, StepFailure};
pub use events::{Claimed, DeliveryOptions, DeliveryRecord, Event, NewEvent, Subscriber};
pub use jobs::{Concurrency, Job, JobOutcome, JobRunRecord, Schedule};
pub use log::{FailureRecord, Handler, LogError, RunLog, RunRecord, RunState, Started, StepRecord, StepState};
#[cfg(feature = "postgres")]
pub use postgres::PostgresLog;
pub use sql::{Dialect, SqlLog};
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteLog;
pub use step::{Step, StepContext, StepError, StepOptions, StepResponse};
pub use workflow::{Data, Output, OutputOf, Parallel, Workflow};
