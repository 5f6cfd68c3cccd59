//! keyward: publishable and secret API keys, verification, revocation and sales-channel scoping.
//!
//! This crate is the module: the domain types, the token format, the rules, and the [`Store`]
//! trait that the SQLite and Postgres crates implement. It knows nothing of HTTP or the CLI; the
//! server and the binary are adapters over it. Every change runs through [`Workflows`] (durable,
//! compensated); reads and verification are methods of [`Keyward`].
//!
//! ```no_run
//! # async fn demo(store: std::sync::Arc<dyn keyward::Store>, log: std::sync::Arc<dyn keyward_flow::RunLog>) -> keyward::Result<()> {
//! use keyward::{Actor, ApiKeyType, CreateApiKey, Keyward, Workflows};
//! let flows = Workflows::new(Keyward::new(store), log, keyward_flow::DEFAULT_LEASE)?;
//! flows.migrate().await?;
//! // Every write names who acts: here a signed-in user (a key acting is held to what it holds).
//! let by = Actor::user("user_1");
//! let created = flows.create_api_key(&by, CreateApiKey::new("CI deploys", ApiKeyType::Secret, "user_1")).await?;
//! let token = created.token.expose(); // shown once
//! assert!(flows.kw().authenticate(token).await?.is_some());
//! # Ok(()) }
//! ```

pub mod actor;
pub mod builtins;
pub mod cache;
pub mod entropy;
pub mod error;
pub mod events;
pub mod filter;
pub mod id;
pub mod idempotency;
pub mod import;
pub mod legacy;
pub mod model;
pub mod policy;
pub mod redact;
pub mod service;
pub mod sql;
pub mod store;
pub mod time;
pub mod token;
pub mod users;
pub mod workflows;

pub use actor::{Actor, KeyActor};
pub use entropy::{Entropy, OsEntropy, ScriptedEntropy, SeededEntropy};
pub use error::{Error, ErrorKind, Result};
pub use events::EventName;
pub use filter::{
    ApiKeyField, ApiKeyFilter, Direction, Field, Filter, ListOptions, Op, Order, SalesChannelField, SalesChannelFilter,
    Value,
};
pub use id::{ApiKeyId, SalesChannelId, UserId};
pub use model::{
    ApiKey, ApiKeyType, CreateApiKey, CreateSalesChannel, CreatedApiKey, KeyPolicy, MAX_EXPIRES_IN, RevokeApiKey,
    SalesChannel, UpdateApiKey, UpdateSalesChannel, User, expiry_in,
};
pub use policy::{Cidr, Holds, Metadata, Permission, PermissionQuery};
pub use service::{Keyward, Verification, VerifyCode};
pub use store::{ChannelStore, KeyStore, NoticeStore, Store, UserStore};
pub use time::{Clock, ClockExt, ManualClock, ManualClockExt, SystemClock, Timestamp};
pub use token::PlainToken;
pub use workflows::Workflows;
