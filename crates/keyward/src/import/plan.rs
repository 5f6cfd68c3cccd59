//! The plan: what keyward holds beside the source, what an import writes, and the report.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{ApiKeyId, SalesChannelId};
use crate::model::{ApiKeyType, SalesChannel};
use crate::service::Keyward;
use crate::store::StoredKey;

use super::CHUNK;
use super::source::{ImportSet, Skipped};

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
    pub(super) fn tally(&mut self, kind: Kind) -> &mut Tally {
        match kind {
            Kind::ApiKey => &mut self.api_keys,
            Kind::SalesChannel => &mut self.sales_channels,
            Kind::Link => &mut self.links,
        }
    }

    pub(super) fn conflict(&mut self, kind: Kind, id: &str, fields: Vec<String>, reason: &str) {
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
    pub(super) fn of(set: &ImportSet, plan: ImportPlan) -> Result<Self> {
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

pub(super) const CHANGED_MEANWHILE: &str = "changed in keyward while the import ran; run it again";

/// The key `source` says, merged with what keyward did to it since: the digest keyward upgraded
/// it to, and the earlier revocation.
pub(super) fn merged_key(current: &StoredKey, source: &StoredKey) -> StoredKey {
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
pub(super) fn key_differences(a: &StoredKey, b: &StoredKey) -> Vec<String> {
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
    differing(fields)
}

fn channel_differences(a: &SalesChannel, b: &SalesChannel) -> Vec<String> {
    let fields = [
        ("name", a.name != b.name),
        ("description", a.description != b.description),
        ("is_disabled", a.is_disabled != b.is_disabled),
        ("metadata", a.metadata != b.metadata),
    ];
    differing(fields)
}

/// The names of the fields that differ.
fn differing<const N: usize>(fields: [(&str, bool); N]) -> Vec<String> {
    fields
        .into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(f, _)| f.to_owned())
        .collect()
}

/// What the key comparison found: which keys keyward lacks, and which keys' missing links are
/// written (new ones, and with `update` every existing one).
struct KeysFound<'a> {
    stored: HashSet<ApiKeyId>,
    new: HashSet<&'a ApiKeyId>,
    linkable: HashSet<&'a ApiKeyId>,
}

impl Keyward {
    /// Compares `set` with what keyward holds: what an import would write, and the report it
    /// would give. Reads only.
    pub async fn plan_import(&self, set: &ImportSet, update: bool) -> Result<ImportPlan> {
        let mut plan = ImportPlan::default();
        let report = &mut plan.report;
        report.skipped.clone_from(&set.skipped);
        report.links.skipped = set.skipped.len() as u64 + set.deleted_links;
        report.api_keys.skipped = set.deleted_keys;
        report.sales_channels.skipped = set.deleted_channels;
        self.plan_channels(set, update, &mut plan).await?;
        let found = self.plan_keys(set, update, &mut plan).await?;
        self.plan_links(set, &found, &mut plan).await?;
        plan.report.legacy_secret_keys = self.store.count_legacy_secret_keys().await?
            + plan.new_keys.iter().filter(|&&i| !set.keys[i].salt.is_empty()).count() as u64;
        Ok(plan)
    }

    async fn plan_channels(&self, set: &ImportSet, update: bool, plan: &mut ImportPlan) -> Result<()> {
        let ids: Vec<SalesChannelId> = set.channels.iter().map(|c| c.id.clone()).collect();
        let mut existing: HashMap<SalesChannelId, SalesChannel> = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            existing.extend(
                self.channels_by_ids(chunk)
                    .await?
                    .into_iter()
                    .map(|c| (c.id.clone(), c)),
            );
        }
        let report = &mut plan.report;
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
        Ok(())
    }

    async fn plan_keys<'a>(&self, set: &'a ImportSet, update: bool, plan: &mut ImportPlan) -> Result<KeysFound<'a>> {
        let ids: Vec<ApiKeyId> = set.keys.iter().map(|k| k.key.id.clone()).collect();
        let mut stored: HashMap<ApiKeyId, StoredKey> = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            stored.extend(
                self.store
                    .stored_api_keys(chunk)
                    .await?
                    .into_iter()
                    .map(|k| (k.key.id.clone(), k)),
            );
        }
        let mut found = KeysFound {
            stored: stored.keys().cloned().collect(),
            new: HashSet::new(),
            linkable: HashSet::new(),
        };
        let report = &mut plan.report;
        for (position, source) in set.keys.iter().enumerate() {
            let id = &source.key.id;
            let Some(current) = stored.get(id) else {
                report.api_keys.imported += 1;
                plan.new_keys.push(position);
                found.new.insert(id);
                found.linkable.insert(id);
                continue;
            };
            if current.key.key_type != source.key.key_type {
                let why = "keyward holds a key of the other type under this id; a key's type never changes";
                report.conflict(Kind::ApiKey, id.as_str(), vec!["type".to_owned()], why);
                continue;
            }
            let merged = merged_key(current, source);
            let differs = key_differences(current, &merged);
            if differs.is_empty() {
                report.api_keys.unchanged += 1;
            } else if update {
                report.api_keys.updated += 1;
                plan.changed_keys.push((current.clone(), merged));
            } else {
                report.conflict(Kind::ApiKey, id.as_str(), differs, "differs from the source");
                continue;
            }
            if update {
                found.linkable.insert(id);
            }
        }
        Ok(found)
    }

    async fn plan_links(&self, set: &ImportSet, found: &KeysFound<'_>, plan: &mut ImportPlan) -> Result<()> {
        let mut keys: Vec<ApiKeyId> = set.links.iter().map(|(k, _)| k.clone()).collect();
        keys.dedup();
        keys.retain(|k| found.stored.contains(k));
        let mut existing: HashSet<(ApiKeyId, SalesChannelId)> = HashSet::new();
        for chunk in keys.chunks(CHUNK) {
            existing.extend(self.store.links_of_keys(chunk).await?);
        }
        let report = &mut plan.report;
        let conflicted: HashSet<String> = report
            .conflicts
            .iter()
            .filter(|c| c.kind == Kind::ApiKey)
            .map(|c| c.id.clone())
            .collect();
        for link in &set.links {
            if existing.contains(link) {
                report.links.unchanged += 1;
            } else if found.linkable.contains(&link.0) {
                report.links.imported += 1;
                let to = if found.new.contains(&link.0) {
                    &mut plan.new_links
                } else {
                    &mut plan.added_links
                };
                to.push(link.clone());
            } else {
                let reason = if conflicted.contains(link.0.as_str()) {
                    "its key is in conflict"
                } else {
                    "keyward's key lacks this link; --update adds it"
                };
                report.conflict(Kind::Link, &format!("{} → {}", link.0, link.1), Vec::new(), reason);
            }
        }
        Ok(())
    }
}
