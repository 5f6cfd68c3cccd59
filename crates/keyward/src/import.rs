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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use keyward_flow::{Step, StepContext, StepResponse, Workflow};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::events::EventName;
use crate::id::{ApiKeyId, SalesChannelId};
use crate::model::{ApiKey, ApiKeyType, SalesChannel};
use crate::service::Keyward;
use crate::store::StoredKey;
use crate::time::Timestamp;
use crate::workflows::step_error;
use crate::{legacy, token};

/// The workflow's name.
pub const IMPORT_MEDUSA: &str = "import-medusa";

/// Rows written per transaction, and per progress report.
const CHUNK: usize = 1_000;

type Cx = StepContext<Keyward>;

// -- the source, as read ----------------------------------------------------------------------

/// A live row of Medusa's `api_key` table, as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MedusaKey {
    pub id: String,
    /// A publishable key's token; a secret key's scrypt hash (hex).
    pub token: String,
    pub salt: String,
    pub redacted: String,
    pub title: String,
    pub key_type: String,
    pub last_used_at: Option<Timestamp>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub revoked_by: Option<String>,
    pub revoked_at: Option<Timestamp>,
    pub updated_at: Timestamp,
}

/// A live row of Medusa's `sales_channel` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MedusaChannel {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub is_disabled: bool,
    pub metadata: Option<serde_json::Value>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A live row of Medusa's `publishable_api_key_sales_channel` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MedusaLink {
    pub publishable_key_id: String,
    pub sales_channel_id: String,
}

/// What a Medusa database holds that concerns keys: its live rows, and how many rows it marks
/// deleted (left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MedusaSnapshot {
    pub keys: Vec<MedusaKey>,
    pub channels: Vec<MedusaChannel>,
    pub links: Vec<MedusaLink>,
    pub deleted_keys: u64,
    pub deleted_channels: u64,
    pub deleted_links: u64,
}

// -- checked ----------------------------------------------------------------------------------

/// A link of the source left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub kind: Kind,
    pub id: String,
    pub reason: String,
}

/// The source in keyward's types: every row checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportSet {
    pub keys: Vec<StoredKey>,
    pub channels: Vec<SalesChannel>,
    pub links: Vec<(ApiKeyId, SalesChannelId)>,
    /// Links that point at no live key or channel of the source, or at a secret key.
    pub skipped: Vec<Skipped>,
    pub deleted_keys: u64,
    pub deleted_channels: u64,
    pub deleted_links: u64,
}

fn bad_key(id: &str, what: impl std::fmt::Display) -> Error {
    Error::invalid_data(format!("api_key row {id:?}: {what}; nothing was imported"))
}

fn bad_channel(id: &str, what: impl std::fmt::Display) -> Error {
    Error::invalid_data(format!("sales_channel row {id:?}: {what}; nothing was imported"))
}

/// `pk_abc***xyz`: what Medusa (and keyward) store as `redacted`.
fn is_redaction(s: &str, kind: ApiKeyType) -> bool {
    let b = s.as_bytes();
    b.len() == 12 && s.starts_with(kind.token_prefix()) && &b[6..9] == b"***"
}

impl ImportSet {
    /// Checks every row of `source`; the first bad one refuses the whole snapshot, by name.
    pub fn from_medusa(source: MedusaSnapshot) -> Result<Self> {
        let mut keys = Vec::with_capacity(source.keys.len());
        for row in source.keys {
            keys.push(checked_key(row)?);
        }
        let mut channels = Vec::with_capacity(source.channels.len());
        for row in source.channels {
            let id = SalesChannelId::parse(&row.id).map_err(|e| bad_channel(&row.id, e))?;
            if row.name.trim().is_empty() {
                return Err(bad_channel(&row.id, "the name is empty"));
            }
            if row.metadata.as_ref().is_some_and(|m| !m.is_object()) {
                return Err(bad_channel(&row.id, "metadata is not a JSON object"));
            }
            channels.push(SalesChannel {
                id,
                name: row.name,
                description: row.description,
                is_disabled: row.is_disabled,
                metadata: row.metadata,
                created_at: row.created_at,
                updated_at: row.updated_at,
                deleted_at: None,
            });
        }
        let key_types: HashMap<&str, ApiKeyType> = keys.iter().map(|k| (k.key.id.as_str(), k.key.key_type)).collect();
        let channel_ids: HashSet<&str> = channels.iter().map(|c| c.id.as_str()).collect();
        let mut links = Vec::with_capacity(source.links.len());
        let mut skipped = Vec::new();
        for l in source.links {
            let name = format!("{} → {}", l.publishable_key_id, l.sales_channel_id);
            let reason = match key_types.get(l.publishable_key_id.as_str()) {
                None => Some("its key is not a live row of the source"),
                Some(ApiKeyType::Secret) => Some("its key is a secret key"),
                Some(ApiKeyType::Publishable) if !channel_ids.contains(l.sales_channel_id.as_str()) => {
                    Some("its sales channel is not a live row of the source")
                }
                Some(ApiKeyType::Publishable) => None,
            };
            match reason {
                Some(reason) => skipped.push(Skipped {
                    kind: Kind::Link,
                    id: name,
                    reason: reason.to_owned(),
                }),
                None => links.push((
                    ApiKeyId::parse(&l.publishable_key_id).map_err(|e| Error::invalid_data(e.to_string()))?,
                    SalesChannelId::parse(&l.sales_channel_id).map_err(|e| Error::invalid_data(e.to_string()))?,
                )),
            }
        }
        links.sort();
        links.dedup();
        Ok(Self {
            keys,
            channels,
            links,
            skipped,
            deleted_keys: source.deleted_keys,
            deleted_channels: source.deleted_channels,
            deleted_links: source.deleted_links,
        })
    }
}

fn checked_key(row: MedusaKey) -> Result<StoredKey> {
    let id = ApiKeyId::parse(&row.id).map_err(|e| bad_key(&row.id, e))?;
    let kind: ApiKeyType = row.key_type.parse().map_err(|_| {
        bad_key(
            &row.id,
            format_args!("type {:?} is neither 'publishable' nor 'secret'", row.key_type),
        )
    })?;
    if !is_redaction(&row.redacted, kind) {
        return Err(bad_key(
            &row.id,
            format_args!(
                "redacted {:?} is not of the form {}abc***xyz",
                row.redacted,
                kind.token_prefix()
            ),
        ));
    }
    let (public_token, salt) = match kind {
        ApiKeyType::Publishable => {
            match token::parse(&row.token) {
                Ok(t) if t.kind() == ApiKeyType::Publishable => {}
                _ => return Err(bad_key(&row.id, "the token of a publishable key is not a pk_ token")),
            }
            if !row.salt.is_empty() {
                return Err(bad_key(&row.id, "a publishable key has a salt"));
            }
            if token::redact(&row.token) != row.redacted {
                return Err(bad_key(&row.id, "redacted does not match the token"));
            }
            (row.token.clone(), String::new())
        }
        ApiKeyType::Secret => {
            if !legacy::is_salt(&row.salt) {
                return Err(bad_key(
                    &row.id,
                    format_args!(
                        "salt {:?} is not {} lower-case hexadecimal characters (Medusa's scrypt salt)",
                        row.salt,
                        legacy::SALT_HEX_LEN
                    ),
                ));
            }
            if !legacy::is_hash(&row.token) {
                // The column's content is not shown: it may be a secret in some other form.
                return Err(bad_key(
                    &row.id,
                    format_args!(
                        "the token column does not hold a Medusa scrypt hash ({} lower-case hexadecimal characters)",
                        legacy::HASH_HEX_LEN
                    ),
                ));
            }
            (String::new(), row.salt)
        }
    };
    Ok(StoredKey {
        key: ApiKey {
            id,
            token: public_token,
            redacted: row.redacted,
            title: row.title,
            key_type: kind,
            last_used_at: row.last_used_at,
            created_by: row.created_by,
            revoked_by: row.revoked_by,
            revoked_at: row.revoked_at,
            created_at: row.created_at,
            updated_at: row.updated_at,
            deleted_at: None,
        },
        stored_token: row.token,
        salt,
    })
}

// -- the plan ---------------------------------------------------------------------------------

/// What a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    ApiKey,
    SalesChannel,
    Link,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ApiKey => "api_key",
            Kind::SalesChannel => "sales_channel",
            Kind::Link => "link",
        }
    }
}

/// Per kind of row: how many of each outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub imported: u64,
    pub unchanged: u64,
    pub updated: u64,
    pub skipped: u64,
    pub conflicts: u64,
}

/// A row that differs between the source and keyward and was left as keyward has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub kind: Kind,
    pub id: String,
    /// The fields that differ.
    pub fields: Vec<String>,
    pub reason: String,
}

/// What an import did (or, for a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    pub dry_run: bool,
    pub api_keys: Tally,
    pub sales_channels: Tally,
    pub links: Tally,
    pub conflicts: Vec<Conflict>,
    pub skipped: Vec<Skipped>,
    /// Secret keys that still hold their Medusa hash in keyward (upgraded on first use).
    pub legacy_secret_keys: u64,
}

impl ImportReport {
    fn tally(&mut self, kind: Kind) -> &mut Tally {
        match kind {
            Kind::ApiKey => &mut self.api_keys,
            Kind::SalesChannel => &mut self.sales_channels,
            Kind::Link => &mut self.links,
        }
    }

    fn conflict(&mut self, kind: Kind, id: &str, fields: Vec<String>, reason: &str) {
        self.tally(kind).conflicts += 1;
        self.conflicts.push(Conflict {
            kind,
            id: id.to_owned(),
            fields,
            reason: reason.to_owned(),
        });
    }

    /// Rows written (or to write).
    pub fn written(&self) -> u64 {
        [self.api_keys, self.sales_channels, self.links]
            .iter()
            .map(|t| t.imported + t.updated)
            .sum()
    }
}

/// What the workflow writes: computed once, recorded, and followed by every step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportPlan {
    pub new_channels: Vec<SalesChannel>,
    /// `(as keyward has it, as it will be)`.
    pub changed_channels: Vec<(SalesChannel, SalesChannel)>,
    /// Positions in the set's `keys` (the rows stay in the workflow's input, recorded once).
    pub new_keys: Vec<usize>,
    pub changed_keys: Vec<(StoredKey, StoredKey)>,
    /// Links of keys this import adds.
    pub new_links: Vec<(ApiKeyId, SalesChannelId)>,
    /// Links an existing key lacks (with `update`).
    pub added_links: Vec<(ApiKeyId, SalesChannelId)>,
    pub report: ImportReport,
}

impl ImportPlan {
    /// Links to write, of both kinds.
    pub fn links(&self) -> impl Iterator<Item = &(ApiKeyId, SalesChannelId)> {
        self.new_links.iter().chain(&self.added_links)
    }
}

/// What the key step writes: the new rows (taken from the input by the plan's positions), the
/// changed ones, and the channels each new key will have (for its `api_key.created`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyWrites {
    pub new_keys: Vec<StoredKey>,
    pub changed_keys: Vec<(StoredKey, StoredKey)>,
    pub new_links: Vec<(ApiKeyId, SalesChannelId)>,
}

impl KeyWrites {
    fn of(set: &ImportSet, plan: ImportPlan) -> Result<Self> {
        let new_keys = plan
            .new_keys
            .iter()
            .map(|&i| {
                set.keys
                    .get(i)
                    .cloned()
                    .ok_or_else(|| Error::unexpected("the import plan names a key its input lacks"))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            new_keys,
            changed_keys: plan.changed_keys,
            new_links: plan.new_links,
        })
    }
}

/// The workflow's input.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportInput {
    pub set: ImportSet,
    /// Apply the source's differences instead of reporting them.
    pub update: bool,
}

const CHANGED_MEANWHILE: &str = "changed in keyward while the import ran; run it again";

/// The key `source` says, merged with what keyward did to it since: the digest keyward upgraded
/// it to, and the earlier revocation.
fn merged_key(current: &StoredKey, source: &StoredKey) -> StoredKey {
    let mut m = source.clone();
    if current.key.key_type == ApiKeyType::Secret && current.salt.is_empty() && !source.salt.is_empty() {
        m.stored_token.clone_from(&current.stored_token);
        m.salt.clear();
    }
    let keep_current = match (current.key.revoked_at, source.key.revoked_at) {
        (Some(c), Some(s)) => c <= s,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if keep_current {
        m.key.revoked_at = current.key.revoked_at;
        m.key.revoked_by.clone_from(&current.key.revoked_by);
    }
    m.key.last_used_at = current.key.last_used_at;
    m.key.updated_at = current.key.updated_at.max(source.key.updated_at);
    m
}

/// The fields of two rows of one key that differ (`last_used_at` and `updated_at` aside).
fn key_differences(a: &StoredKey, b: &StoredKey) -> Vec<String> {
    let (x, y) = (&a.key, &b.key);
    let fields = [
        ("token", a.stored_token != b.stored_token || a.salt != b.salt),
        ("type", x.key_type != y.key_type),
        ("redacted", x.redacted != y.redacted),
        ("title", x.title != y.title),
        ("created_by", x.created_by != y.created_by),
        ("created_at", x.created_at != y.created_at),
        ("revoked_at", x.revoked_at != y.revoked_at),
        ("revoked_by", x.revoked_by != y.revoked_by),
    ];
    fields
        .into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(f, _)| f.to_owned())
        .collect()
}

fn channel_differences(a: &SalesChannel, b: &SalesChannel) -> Vec<String> {
    let fields = [
        ("name", a.name != b.name),
        ("description", a.description != b.description),
        ("is_disabled", a.is_disabled != b.is_disabled),
        ("metadata", a.metadata != b.metadata),
    ];
    fields
        .into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(f, _)| f.to_owned())
        .collect()
}

impl Keyward {
    /// Compares `set` with what keyward holds: what an import would write, and the report it
    /// would give. Reads only.
    pub async fn plan_import(&self, set: &ImportSet, update: bool) -> Result<ImportPlan> {
        let mut plan = ImportPlan::default();
        let report = &mut plan.report;
        report.skipped.clone_from(&set.skipped);
        report.links.skipped = set.skipped.len() as u64;
        report.api_keys.skipped = set.deleted_keys;
        report.sales_channels.skipped = set.deleted_channels;
        report.links.skipped += set.deleted_links;

        let channel_ids: Vec<SalesChannelId> = set.channels.iter().map(|c| c.id.clone()).collect();
        let mut existing: HashMap<SalesChannelId, SalesChannel> = HashMap::new();
        for chunk in channel_ids.chunks(CHUNK) {
            existing.extend(
                self.channels_by_ids(chunk)
                    .await?
                    .into_iter()
                    .map(|c| (c.id.clone(), c)),
            );
        }
        for source in &set.channels {
            let Some(current) = existing.get(&source.id) else {
                report.sales_channels.imported += 1;
                plan.new_channels.push(source.clone());
                continue;
            };
            let differs = channel_differences(current, source);
            if differs.is_empty() {
                report.sales_channels.unchanged += 1;
            } else if update {
                report.sales_channels.updated += 1;
                let mut merged = source.clone();
                merged.created_at = current.created_at;
                merged.updated_at = current.updated_at.max(source.updated_at);
                plan.changed_channels.push((current.clone(), merged));
            } else {
                report.conflict(
                    Kind::SalesChannel,
                    source.id.as_str(),
                    differs,
                    "differs from the source",
                );
            }
        }

        let key_ids: Vec<ApiKeyId> = set.keys.iter().map(|k| k.key.id.clone()).collect();
        let mut stored: HashMap<ApiKeyId, StoredKey> = HashMap::new();
        for chunk in key_ids.chunks(CHUNK) {
            stored.extend(
                self.store
                    .stored_api_keys(chunk)
                    .await?
                    .into_iter()
                    .map(|k| (k.key.id.clone(), k)),
            );
        }
        // Keys whose missing links are written: new ones, and with `update` every existing one.
        let mut linkable: HashSet<&ApiKeyId> = HashSet::new();
        let mut new_ids: HashSet<&ApiKeyId> = HashSet::new();
        for (position, source) in set.keys.iter().enumerate() {
            let id = &source.key.id;
            let Some(current) = stored.get(id) else {
                report.api_keys.imported += 1;
                plan.new_keys.push(position);
                new_ids.insert(id);
                linkable.insert(id);
                continue;
            };
            if current.key.key_type != source.key.key_type {
                report.conflict(
                    Kind::ApiKey,
                    id.as_str(),
                    vec!["type".to_owned()],
                    "keyward holds a key of the other type under this id; a key's type never changes",
                );
                continue;
            }
            let merged = merged_key(current, source);
            let differs = key_differences(current, &merged);
            if differs.is_empty() {
                report.api_keys.unchanged += 1;
                if update {
                    linkable.insert(id);
                }
            } else if update {
                report.api_keys.updated += 1;
                plan.changed_keys.push((current.clone(), merged));
                linkable.insert(id);
            } else {
                report.conflict(Kind::ApiKey, id.as_str(), differs, "differs from the source");
            }
        }

        let existing_links: HashSet<(ApiKeyId, SalesChannelId)> = {
            let mut all = HashSet::new();
            let keys: Vec<ApiKeyId> = {
                let mut k: Vec<ApiKeyId> = set.links.iter().map(|(k, _)| k.clone()).collect();
                k.dedup();
                k.into_iter().filter(|k| stored.contains_key(k)).collect()
            };
            for chunk in keys.chunks(CHUNK) {
                all.extend(self.store.links_of_keys(chunk).await?);
            }
            all
        };
        let conflicted: HashSet<String> = report
            .conflicts
            .iter()
            .filter(|c| c.kind == Kind::ApiKey)
            .map(|c| c.id.clone())
            .collect();
        let mut link_conflicts = Vec::new();
        for link in &set.links {
            if existing_links.contains(link) {
                report.links.unchanged += 1;
            } else if linkable.contains(&link.0) {
                report.links.imported += 1;
                if new_ids.contains(&link.0) {
                    plan.new_links.push(link.clone());
                } else {
                    plan.added_links.push(link.clone());
                }
            } else {
                link_conflicts.push(link.clone());
            }
        }
        for (key, channel) in link_conflicts {
            let reason = if conflicted.contains(key.as_str()) {
                "its key is in conflict"
            } else {
                "keyward's key lacks this link; --update adds it"
            };
            report.conflict(Kind::Link, &format!("{key} → {channel}"), Vec::new(), reason);
        }
        report.legacy_secret_keys = self.store.count_legacy_secret_keys().await?
            + plan.new_keys.iter().filter(|&&i| !set.keys[i].salt.is_empty()).count() as u64;
        Ok(plan)
    }
}

// -- progress ---------------------------------------------------------------------------------

/// Rows written so far, and the phase, of runs that someone watches, by run id. A step reports
/// what it does and what it wrote; a caller in the same process reads it (a progress bar). A run
/// recovered by another process reports to no one.
#[derive(Debug, Default)]
pub struct Progress {
    runs: Mutex<HashMap<String, Arc<Watched>>>,
}

#[derive(Debug)]
struct Watched {
    count: AtomicU64,
    phase: Mutex<&'static str>,
}

impl Progress {
    /// Starts following `run`, in the phase "recording the run" (the engine writes its input);
    /// followed until the returned watch is dropped.
    pub fn watch(self: &Arc<Self>, run: &str) -> ProgressWatch {
        let watched = Arc::new(Watched {
            count: AtomicU64::new(0),
            phase: Mutex::new("recording the run"),
        });
        self.lock().insert(run.to_owned(), Arc::clone(&watched));
        ProgressWatch {
            board: Arc::clone(self),
            run: run.to_owned(),
            watched,
        }
    }

    fn advance(&self, run: &str, n: usize) {
        if let Some(w) = self.lock().get(run) {
            w.count.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    fn phase(&self, run: &str, phase: &'static str) {
        if let Some(w) = self.lock().get(run) {
            *w.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Watched>>> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one watched run has done so far.
#[derive(Debug)]
pub struct ProgressWatch {
    board: Arc<Progress>,
    run: String,
    watched: Arc<Watched>,
}

impl ProgressWatch {
    /// Rows written.
    pub fn count(&self) -> u64 {
        self.watched.count.load(Ordering::Relaxed)
    }

    /// What the run is doing.
    pub fn phase(&self) -> &'static str {
        *self.watched.phase.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ProgressWatch {
    fn drop(&mut self) {
        self.board.lock().remove(&self.run);
    }
}

// -- steps ------------------------------------------------------------------------------------

fn retried<I, O>(step: Step<Keyward, I, O>) -> Step<Keyward, I, O> {
    step.max_retries(2)
        .retry_interval(std::time::Duration::from_millis(200))
}

/// `plan-import`: compares the source with keyward. Recorded, so a resumed run writes the same.
pub fn plan_import_step() -> Step<Keyward, ImportInput, ImportPlan> {
    Step::new("plan-import", |input: ImportInput, cx: Cx| async move {
        cx.container()
            .progress
            .phase(cx.transaction_id(), "comparing with keyward");
        let plan = cx
            .container()
            .plan_import(&input.set, input.update)
            .await
            .map_err(step_error)?;
        Ok(StepResponse::new(plan))
    })
    .no_compensation()
}

/// What the channel step wrote.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChannelsWritten {
    pub inserted: Vec<SalesChannelId>,
    /// `(as written, as it was)`.
    pub updated: Vec<(SalesChannel, SalesChannel)>,
}

/// `import-sales-channels`: inserts the new channels and applies the changed ones where they
/// still hold what the plan read. `sales_channel.created` / `.updated`. Compensation deletes what
/// it inserted and puts back what it changed.
pub fn import_channels_step() -> Step<Keyward, ImportPlan, ChannelsWritten> {
    retried(Step::new(
        "import-sales-channels",
        |plan: ImportPlan, cx: Cx| async move {
            let kw = cx.container();
            kw.progress.phase(cx.transaction_id(), "writing sales channels");
            let ids: Vec<SalesChannelId> = plan.new_channels.iter().map(|c| c.id.clone()).collect();
            // A repeated invocation finds its own earlier inserts.
            let present: HashSet<SalesChannelId> = kw
                .channels_by_ids(&ids)
                .await
                .map_err(step_error)?
                .into_iter()
                .map(|c| c.id)
                .collect();
            let fresh: Vec<SalesChannel> = plan
                .new_channels
                .iter()
                .filter(|c| !present.contains(&c.id))
                .cloned()
                .collect();
            for chunk in fresh.chunks(CHUNK) {
                kw.store.insert_sales_channels(chunk).await.map_err(step_error)?;
            }
            let mut written = ChannelsWritten {
                inserted: ids,
                updated: Vec::new(),
            };
            for (current, merged) in &plan.changed_channels {
                if kw
                    .store
                    .restore_sales_channel(current, merged)
                    .await
                    .map_err(step_error)?
                {
                    written.updated.push((merged.clone(), current.clone()));
                }
            }
            let mut response = StepResponse::new(written.clone());
            for id in &written.inserted {
                response = response.event(EventName::SalesChannelCreated, serde_json::json!({ "id": id }));
            }
            for (c, _) in &written.updated {
                response = response.event(EventName::SalesChannelUpdated, serde_json::json!({ "id": c.id }));
            }
            Ok(response.compensate_with(&written))
        },
    ))
    .compensate(|written: Option<ChannelsWritten>, cx: Cx| async move {
        let written = match written {
            Some(w) => w,
            None => ChannelsWritten {
                inserted: cx
                    .input::<ImportPlan>()?
                    .new_channels
                    .into_iter()
                    .map(|c| c.id)
                    .collect(),
                updated: Vec::new(),
            },
        };
        let kw = cx.container();
        for (as_written, previous) in &written.updated {
            if !kw
                .store
                .restore_sales_channel(as_written, previous)
                .await
                .map_err(step_error)?
            {
                cx.conflict(format!(
                    "sales channel {} changed after the import; left as it is",
                    as_written.id
                ));
            }
        }
        for chunk in written.inserted.chunks(CHUNK) {
            kw.delete_sales_channels(chunk).await.map_err(step_error)?;
        }
        Ok(())
    })
}

/// What the key step wrote.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeysWritten {
    pub inserted: Vec<ApiKeyId>,
    /// `(as written, as it was)`.
    pub updated: Vec<(StoredKey, StoredKey)>,
}

/// `import-api-keys`: inserts the new keys (a thousand per transaction) and applies the changed
/// ones where they still hold what the plan read. `api_key.created` (with `sales_channel_ids`
/// for a publishable key the links step will link), `.updated`, and `.revoked` where the source
/// brought a revocation. Compensation removes what it inserted and puts back
/// what it changed, except a revocation: that stays.
pub fn import_keys_step() -> Step<Keyward, KeyWrites, KeysWritten> {
    retried(Step::new("import-api-keys", |plan: KeyWrites, cx: Cx| async move {
        let kw = cx.container();
        kw.progress.phase(cx.transaction_id(), "writing keys");
        for chunk in plan.new_keys.chunks(CHUNK) {
            // Ids already present (a repeated invocation) are left alone by the store.
            kw.store.restore_api_keys(chunk).await.map_err(step_error)?;
            kw.progress.advance(cx.transaction_id(), chunk.len());
        }
        let mut written = KeysWritten {
            inserted: plan.new_keys.iter().map(|k| k.key.id.clone()).collect(),
            updated: Vec::new(),
        };
        let mut revoked = Vec::new();
        for chunk in plan.changed_keys.chunks(CHUNK) {
            let replaced = kw.store.replace_api_keys(chunk).await.map_err(step_error)?;
            for (current, merged) in chunk.iter().filter(|(c, _)| replaced.contains(&c.key.id)) {
                if merged.key.revoked_at != current.key.revoked_at {
                    revoked.push(serde_json::json!({ "id": merged.key.id, "revoked_at": merged.key.revoked_at }));
                }
                written.updated.push((merged.clone(), current.clone()));
            }
            kw.progress.advance(cx.transaction_id(), chunk.len());
        }
        let mut response = StepResponse::new(written.clone()).compensate_with(&written);
        let mut channels: HashMap<&ApiKeyId, Vec<&SalesChannelId>> = HashMap::new();
        for (k, c) in &plan.new_links {
            channels.entry(k).or_default().push(c);
        }
        for k in &plan.new_keys {
            let id = &k.key.id;
            response = response.event(
                EventName::ApiKeyCreated,
                match (k.key.key_type, channels.get(id)) {
                    (ApiKeyType::Publishable, Some(c)) => serde_json::json!({ "id": id, "sales_channel_ids": c }),
                    _ => serde_json::json!({ "id": id }),
                },
            );
        }
        for (k, _) in &written.updated {
            response = response.event(EventName::ApiKeyUpdated, serde_json::json!({ "id": k.key.id }));
        }
        for data in revoked {
            response = response.event(EventName::ApiKeyRevoked, data);
        }
        Ok(response)
    }))
    .compensate(|written: Option<KeysWritten>, cx: Cx| async move {
        let written = match written {
            Some(w) => w,
            None => KeysWritten {
                inserted: cx
                    .input::<KeyWrites>()?
                    .new_keys
                    .into_iter()
                    .map(|k| k.key.id)
                    .collect(),
                updated: Vec::new(),
            },
        };
        let kw = cx.container();
        // Back to what keyward had, but a revocation the source brought stays: undoing an
        // import never makes a key valid again.
        let back: Vec<(StoredKey, StoredKey)> = written
            .updated
            .iter()
            .map(|(as_written, previous)| {
                let mut previous = previous.clone();
                previous.key.revoked_at = as_written.key.revoked_at;
                previous.key.revoked_by.clone_from(&as_written.key.revoked_by);
                (as_written.clone(), previous)
            })
            .collect();
        let restored = kw.store.replace_api_keys(&back).await.map_err(step_error)?;
        for (k, _) in back.iter().filter(|(k, _)| !restored.contains(&k.key.id)) {
            cx.conflict(format!("api key {} changed after the import; left as it is", k.key.id));
        }
        for chunk in written.inserted.chunks(CHUNK) {
            kw.discard_api_keys(chunk).await.map_err(step_error)?;
        }
        Ok(())
    })
}

/// `import-links`: links the planned channels to their keys, a thousand per transaction. A key
/// this run imported announced its channels in its `api_key.created`; an existing key gaining
/// links (with `update`) gets `api_key.updated` `{id, sales_channels_added}`. Compensation
/// unlinks what it linked.
pub fn import_links_step() -> Step<Keyward, ImportPlan, Vec<(ApiKeyId, SalesChannelId)>> {
    retried(Step::new("import-links", |plan: ImportPlan, cx: Cx| async move {
        let kw = cx.container();
        kw.progress.phase(cx.transaction_id(), "writing links");
        let now = kw.now();
        let mut linked = Vec::new();
        let links: Vec<(ApiKeyId, SalesChannelId)> = plan.links().cloned().collect();
        for chunk in links.chunks(CHUNK) {
            linked.extend(kw.store.insert_links(chunk, now).await.map_err(step_error)?);
            kw.progress.advance(cx.transaction_id(), chunk.len());
        }
        let existing: HashSet<&(ApiKeyId, SalesChannelId)> = plan.added_links.iter().collect();
        let mut added: BTreeMap<&ApiKeyId, Vec<&SalesChannelId>> = BTreeMap::new();
        for (k, c) in linked.iter().filter(|l| existing.contains(l)) {
            added.entry(k).or_default().push(c);
        }
        kw.progress.phase(cx.transaction_id(), "publishing events");
        let mut response = StepResponse::new(linked.clone()).compensate_with(&linked);
        for (id, channels) in added {
            response = response.event(
                EventName::ApiKeyUpdated,
                serde_json::json!({ "id": id, "sales_channels_added": channels }),
            );
        }
        Ok(response)
    }))
    .compensate(|linked: Option<Vec<(ApiKeyId, SalesChannelId)>>, cx: Cx| async move {
        let linked = match linked {
            Some(l) => l,
            None => cx.input::<ImportPlan>()?.links().cloned().collect(),
        };
        let kw = cx.container();
        let mut by_key: BTreeMap<ApiKeyId, Vec<SalesChannelId>> = BTreeMap::new();
        for (k, c) in linked {
            by_key.entry(k).or_default().push(c);
        }
        for (key, channels) in by_key {
            match kw.remove_sales_channels(&key, &channels).await {
                // The key is gone (removed by the key step's compensation), and so its links.
                Err(e) if e.kind == crate::ErrorKind::NotFound => {}
                other => {
                    other.map_err(step_error)?;
                }
            }
        }
        Ok(())
    })
}

/// `import-medusa`: plan, then channels, keys and links; returns the report (with the rows that
/// changed in keyward while it ran counted as conflicts).
pub fn import_medusa_workflow() -> Workflow<Keyward, ImportInput, ImportReport> {
    let (plan, channels, keys, links) = (
        plan_import_step(),
        import_channels_step(),
        import_keys_step(),
        import_links_step(),
    );
    let (p, c, k) = (plan.clone(), channels.clone(), keys.clone());
    Workflow::<Keyward, ImportInput, ImportReport>::new(IMPORT_MEDUSA)
        .step(&plan, |d| d.input())
        .step(&channels, {
            let plan = plan.clone();
            move |d| d.output(&plan)
        })
        .step(&keys, {
            let plan = plan.clone();
            move |d| {
                let input: ImportInput = d.input()?;
                KeyWrites::of(&input.set, d.output(&plan)?).map_err(step_error)
            }
        })
        .step(&links, move |d| d.output(&plan))
        .returns(move |d| {
            let plan: ImportPlan = d.output(&p)?;
            let written_channels: ChannelsWritten = d.output(&c)?;
            let written_keys: KeysWritten = d.output(&k)?;
            let mut report = plan.report;
            for (current, _) in &plan.changed_channels {
                if !written_channels.updated.iter().any(|(w, _)| w.id == current.id) {
                    report.sales_channels.updated -= 1;
                    report.conflict(Kind::SalesChannel, current.id.as_str(), Vec::new(), CHANGED_MEANWHILE);
                }
            }
            for (current, _) in &plan.changed_keys {
                if !written_keys.updated.iter().any(|(w, _)| w.key.id == current.key.id) {
                    report.api_keys.updated -= 1;
                    report.conflict(Kind::ApiKey, current.key.id.as_str(), Vec::new(), CHANGED_MEANWHILE);
                }
            }
            Ok(report)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms).unwrap()
    }

    fn secret_row(id: &str) -> MedusaKey {
        MedusaKey {
            id: id.to_owned(),
            token: "ab".repeat(64),
            salt: "cd".repeat(16),
            redacted: "sk_0e7***fba".to_owned(),
            title: "ci".to_owned(),
            key_type: "secret".to_owned(),
            last_used_at: None,
            created_by: "user_1".to_owned(),
            created_at: at(1_000),
            revoked_by: None,
            revoked_at: None,
            updated_at: at(1_000),
        }
    }

    fn refusal(row: MedusaKey) -> String {
        let snapshot = MedusaSnapshot {
            keys: vec![secret_row("apk_GOOD"), row],
            ..MedusaSnapshot::default()
        };
        ImportSet::from_medusa(snapshot).unwrap_err().message
    }

    #[test]
    fn a_bad_row_refuses_the_snapshot_by_name() {
        let mut r = secret_row("apk_BAD");
        r.key_type = "restricted".to_owned();
        assert_eq!(
            refusal(r),
            "api_key row \"apk_BAD\": type \"restricted\" is neither 'publishable' nor 'secret'; nothing was imported"
        );
        let mut r = secret_row("apk_BAD");
        r.salt = "xyz".to_owned();
        assert!(refusal(r).starts_with("api_key row \"apk_BAD\": salt \"xyz\" is not 32 lower-case"));
        let mut r = secret_row("apk_BAD");
        r.token = "sk_plaintext".to_owned();
        let m = refusal(r);
        assert!(m.contains("does not hold a Medusa scrypt hash"), "{m}");
        assert!(!m.contains("sk_plaintext"), "the column's content is not echoed: {m}");
        let mut r = secret_row("apk_BAD");
        r.redacted = "sk_0e7fba".to_owned();
        assert!(refusal(r).contains("redacted \"sk_0e7fba\" is not of the form sk_abc***xyz"));
        let mut r = secret_row("apk_BAD");
        r.key_type = "publishable".to_owned();
        assert!(refusal(r).contains("is not of the form pk_abc***xyz"));
    }

    #[test]
    fn a_publishable_row_needs_its_token_and_no_salt() {
        let token = "pk_ae4bbd495a26f8e6ae492c3470cc47879010b6d8e83b8a40fdd640c175589b59";
        let row = MedusaKey {
            token: token.to_owned(),
            salt: String::new(),
            redacted: token::redact(token),
            key_type: "publishable".to_owned(),
            ..secret_row("apk_PK")
        };
        let set = ImportSet::from_medusa(MedusaSnapshot {
            keys: vec![row.clone()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(set.keys[0].key.token, token, "a publishable key is public");
        assert!(
            refusal(MedusaKey {
                salt: "cd".repeat(16),
                ..row.clone()
            })
            .contains("a publishable key has a salt")
        );
        assert!(
            refusal(MedusaKey {
                token: "pk_nothex".to_owned(),
                ..row
            })
            .contains("not a pk_ token")
        );
    }

    #[test]
    fn dangling_links_are_skipped_with_their_reason() {
        let snapshot = MedusaSnapshot {
            keys: vec![secret_row("apk_SK")],
            channels: vec![MedusaChannel {
                id: "sc_1".to_owned(),
                name: "web".to_owned(),
                description: None,
                is_disabled: false,
                metadata: None,
                created_at: at(1),
                updated_at: at(1),
            }],
            links: vec![
                MedusaLink {
                    publishable_key_id: "apk_SK".to_owned(),
                    sales_channel_id: "sc_1".to_owned(),
                },
                MedusaLink {
                    publishable_key_id: "apk_GONE".to_owned(),
                    sales_channel_id: "sc_1".to_owned(),
                },
            ],
            ..Default::default()
        };
        let set = ImportSet::from_medusa(snapshot).unwrap();
        assert!(set.links.is_empty());
        let reasons: Vec<&str> = set.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(
            reasons,
            ["its key is a secret key", "its key is not a live row of the source"]
        );
    }

    fn stored(row: MedusaKey) -> StoredKey {
        checked_key(row).unwrap()
    }

    #[test]
    fn keywards_own_later_work_is_no_difference() {
        let source = stored(secret_row("apk_1"));
        let mut current = source.clone();
        current.stored_token = "ef".repeat(32);
        current.salt.clear();
        current.key.last_used_at = Some(at(5_000));
        current.key.revoked_at = Some(at(4_000));
        current.key.revoked_by = Some("user_2".to_owned());
        current.key.updated_at = at(4_000);
        let merged = merged_key(&current, &source);
        assert!(key_differences(&current, &merged).is_empty());
    }

    #[test]
    fn a_revocation_is_never_lifted_or_postponed() {
        let mut source = stored(secret_row("apk_1"));
        source.key.revoked_at = Some(at(9_000));
        source.key.revoked_by = Some("medusa".to_owned());
        let mut current = source.clone();
        current.key.revoked_at = Some(at(3_000));
        current.key.revoked_by = Some("keyward".to_owned());
        assert_eq!(merged_key(&current, &source).key.revoked_at, Some(at(3_000)));
        // The source's earlier revocation is a difference, and wins.
        current.key.revoked_at = Some(at(20_000));
        let merged = merged_key(&current, &source);
        assert_eq!(merged.key.revoked_at, Some(at(9_000)));
        assert_eq!(merged.key.revoked_by.as_deref(), Some("medusa"));
        assert_eq!(key_differences(&current, &merged), ["revoked_at", "revoked_by"]);
        // A source without a revocation never lifts keyward's.
        source.key.revoked_at = None;
        assert_eq!(merged_key(&current, &source).key.revoked_at, Some(at(20_000)));
    }
}
