//! The API key module: every rule about keys, channels and their links, once.
//!
//! `Keyward` holds a store, a clock and an entropy source. Every operation reads the clock once
//! and passes that instant down, so a test with a [`crate::ManualClock`] sees scheduled revocation
//! happen exactly when it should. Secret tokens exist in plain text only inside the
//! [`CreatedApiKey`] that create returns.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::entropy::{Entropy, OsEntropy};
use crate::error::{Error, ErrorKind, Result};
use crate::filter::{ApiKeyField, ApiKeyFilter, ListOptions, Op};
use crate::id::{ApiKeyId, SalesChannelId, UlidGenerator};
use crate::model::{ApiKey, ApiKeyType, CreateApiKey, CreatedApiKey, SalesChannel};
use crate::store::{Blocked, NewApiKey, Store};
use crate::time::{Clock, ClockExt, SystemClock, Timestamp};
use crate::token::{self};

mod channels;
mod verify;

pub use verify::{Verification, VerifyCode};

/// The name and description Medusa's first migration gives the seeded channel; kept verbatim so a
/// fresh keyward answers a Medusa client exactly as a fresh Medusa does.
pub const DEFAULT_SALES_CHANNEL_NAME: &str = "Default Sales Channel";
pub const DEFAULT_SALES_CHANNEL_DESCRIPTION: &str = "Created by Medusa";
pub const DEFAULT_PUBLISHABLE_KEY_TITLE: &str = "Default Publishable API Key";

/// The module. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Keyward {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) entropy: Arc<dyn Entropy>,
    ids: Arc<UlidGenerator>,
    legacy: Arc<crate::legacy::LegacyVerifier>,
    pub(crate) progress: Arc<crate::import::Progress>,
}

impl std::fmt::Debug for Keyward {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyward")
            .field("store", &self.store.backend())
            .finish_non_exhaustive()
    }
}

impl Keyward {
    /// The module on `store` with the system clock and the OS CSPRNG.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_parts(store, Arc::new(SystemClock), Arc::new(OsEntropy))
    }

    /// The module with an injected clock and entropy source (tests, benchmarks).
    pub fn with_parts(store: Arc<dyn Store>, clock: Arc<dyn Clock>, entropy: Arc<dyn Entropy>) -> Self {
        Self {
            store,
            clock,
            entropy,
            ids: Arc::new(UlidGenerator::new()),
            legacy: Arc::new(crate::legacy::LegacyVerifier::per_core()),
            progress: Arc::default(),
        }
    }

    /// The store, for the module itself: every write goes through [`crate::Workflows`], whose
    /// steps call it; readers use the module's read methods.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The verification cache (its statistics and state), shared with the store.
    pub fn cache(&self) -> &crate::cache::Cache {
        self.store.cache()
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.store.ping().await
    }

    /// Follows other nodes' changes into this node's cache until the future is dropped (the
    /// cache is bypassed while it is not connected).
    pub async fn watch_changes(&self) {
        self.store.watch_changes().await
    }

    /// The setting `name`, or `value` stored as it when there is none yet (the first of two
    /// racing nodes wins; both get its value).
    pub async fn setting_or_insert(&self, name: &str, value: &str) -> Result<String> {
        self.store.setting_or_insert(name, value, self.now()).await
    }

    /// Where running imports report the rows they wrote.
    pub fn import_progress(&self) -> &Arc<crate::import::Progress> {
        &self.progress
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Migrates the store, then writes the first-start seed (Default Sales Channel and Default
    /// Publishable API Key, linked) if it has not been written yet. Safe to run on every start
    /// and from several processes.
    pub async fn migrate(&self) -> Result<()> {
        self.store.migrate().await?;
        if self.store.is_seeded().await? {
            return Ok(());
        }
        let now = self.now();
        let channel = SalesChannel {
            id: SalesChannelId::generate(&self.ids, now, self.entropy.as_ref())?,
            name: DEFAULT_SALES_CHANNEL_NAME.to_owned(),
            description: Some(DEFAULT_SALES_CHANNEL_DESCRIPTION.to_owned()),
            is_disabled: false,
            metadata: None,
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        let (key, _token) = self.new_key_row(
            &CreateApiKey::new(DEFAULT_PUBLISHABLE_KEY_TITLE, ApiKeyType::Publishable, ""),
            now,
        )?;
        self.store.seed(&channel, &key).await
    }

    // -- API keys ---------------------------------------------------------------------------

    /// Creates keys (any mix of types, any number of active secret keys) in one transaction.
    /// The plain tokens are returned here and never again.
    pub(crate) async fn create_api_keys(&self, input: Vec<CreateApiKey>) -> Result<Vec<CreatedApiKey>> {
        if input.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now();
        let mut rows = Vec::with_capacity(input.len());
        let mut created = Vec::with_capacity(input.len());
        for data in &input {
            let (row, token) = self.new_key_row(data, now)?;
            created.push(CreatedApiKey {
                key: ApiKey {
                    id: row.id.clone(),
                    token: String::new(),
                    redacted: row.redacted.clone(),
                    title: row.title.clone(),
                    key_type: row.key_type,
                    last_used_at: None,
                    created_by: row.created_by.clone(),
                    revoked_by: None,
                    revoked_at: None,
                    created_at: now,
                    updated_at: now,
                    deleted_at: None,
                    expires_at: row.expires_at,
                    policy: row.policy.clone(),
                },
                token,
            });
            rows.push(row);
        }
        self.store.insert_api_keys(&rows).await?;
        for c in &mut created {
            if c.key.key_type == ApiKeyType::Publishable {
                c.key.token = c.token.expose().to_owned();
            }
        }
        Ok(created)
    }

    fn new_key_row(&self, data: &CreateApiKey, now: Timestamp) -> Result<(NewApiKey, token::PlainToken)> {
        let token = if data.policy.permissions.is_some() {
            token::generate_restricted(self.entropy.as_ref())?
        } else {
            token::generate(data.key_type, self.entropy.as_ref())?
        };
        let id = match &data.id {
            Some(id) => id.clone(),
            None => ApiKeyId::generate(&self.ids, now, self.entropy.as_ref())?,
        };
        let stored = match data.key_type {
            ApiKeyType::Secret => token.digest(),
            ApiKeyType::Publishable => token.expose().to_owned(),
        };
        let row = NewApiKey {
            id,
            token: stored,
            salt: String::new(),
            redacted: token.redacted(),
            title: data.title.clone(),
            key_type: data.key_type,
            created_by: data.created_by.clone(),
            created_at: now,
            expires_at: data.expires_at,
            policy: data.policy.clone(),
        };
        Ok((row, token))
    }

    /// Deletes keys and their links. Every key must be revoked (now, not in the future);
    /// otherwise nothing is deleted. Unknown ids are ignored; returns the ids it deleted.
    pub(crate) async fn delete_api_keys(&self, ids: &[ApiKeyId]) -> Result<Vec<ApiKeyId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        match self.store.delete_api_keys(ids, self.now()).await? {
            Ok(deleted) => Ok(deleted),
            Err(Blocked::NotRevoked(unrevoked)) => Err(Error::not_allowed(format!(
                "Cannot delete api keys that are not revoked - {}",
                join_ids(&unrevoked)
            ))),
            Err(other) => Err(unexpected_block(other)),
        }
    }

    /// One key; `not_found` when missing.
    pub async fn retrieve_api_key(&self, id: &ApiKeyId) -> Result<ApiKey> {
        self.store
            .list_api_keys(&ApiKeyFilter::ids([id]), &ListOptions::default())
            .await?
            .pop()
            .ok_or_else(|| not_found(id))
    }

    /// Keys matching `filter`. A raw secret token in a `token` condition matches its key.
    /// Unless the filter is limited to publishable keys, `token` can only be matched by
    /// equality with full tokens, and not ordered by: a secret key's stored digest never leaks
    /// through a range, a pattern or an order.
    pub async fn list_api_keys(
        &self,
        filter: &ApiKeyFilter,
        options: &ListOptions<ApiKeyField>,
    ) -> Result<Vec<ApiKey>> {
        check_token_use(filter, Some(options))?;
        self.store.list_api_keys(&stored_token_filter(filter), options).await
    }

    pub async fn count_api_keys(&self, filter: &ApiKeyFilter) -> Result<u64> {
        check_token_use(filter, None)?;
        self.store.count_api_keys(&stored_token_filter(filter)).await
    }

    /// A page of keys and the number of keys matching `filter` overall.
    pub async fn list_and_count_api_keys(
        &self,
        filter: &ApiKeyFilter,
        options: &ListOptions<ApiKeyField>,
    ) -> Result<(Vec<ApiKey>, u64)> {
        check_token_use(filter, Some(options))?;
        let filter = stored_token_filter(filter);
        let keys = self.store.list_api_keys(&filter, options).await?;
        let count = self.store.count_api_keys(&filter).await?;
        Ok((keys, count))
    }

    /// The ids of the sales channels linked to this key, in id order.
    pub(crate) async fn channel_ids_of(&self, id: &ApiKeyId) -> Result<Vec<SalesChannelId>> {
        Ok(self
            .store
            .links_of_keys(std::slice::from_ref(id))
            .await?
            .into_iter()
            .map(|(_, channel)| channel)
            .collect())
    }

    /// How many secret keys imported from Medusa still wait for their first use (and so for
    /// their upgrade to the fast digest).
    pub async fn count_legacy_secret_keys(&self) -> Result<u64> {
        self.store.count_legacy_secret_keys().await
    }

    pub(crate) fn ids(&self) -> &UlidGenerator {
        &self.ids
    }
}

/// Groups linked records under their owners, in link order. Every owner gets an entry; a link
/// whose record vanished between the two reads is skipped.
fn group_links<O: Ord + Clone, I: Ord, R: Clone>(
    owners: &[O],
    links: Vec<(O, I)>,
    records: Vec<R>,
    id_of: impl Fn(&R) -> &I,
) -> BTreeMap<O, Vec<R>> {
    let by_id: BTreeMap<&I, &R> = records.iter().map(|r| (id_of(r), r)).collect();
    let mut map: BTreeMap<O, Vec<R>> = owners.iter().map(|o| (o.clone(), Vec::new())).collect();
    for (owner, id) in &links {
        if let Some(r) = by_id.get(id) {
            map.entry(owner.clone()).or_default().push((*r).clone());
        }
    }
    map
}

pub(crate) const REVOKED_BY_REQUIRED: &str = "You must provide a revoked_by field when revoking a key.";

pub(crate) fn already_revoked(count: usize) -> Error {
    already_revoked_of(ApiKeyType::Secret, count)
}

/// The refusal of a change that would need keys of `key_type` not to be revoked yet.
pub(crate) fn already_revoked_of(key_type: ApiKeyType, count: usize) -> Error {
    Error::invalid_data(format!("There are {count} {key_type} keys that are already revoked."))
}

/// Raw secret tokens in `token` conditions become digests; anything else is compared as given.
/// Listing by a secret token therefore finds its key without the plain token ever reaching SQL.
/// The message of a `token` condition that could read secret keys' digests.
pub const TOKEN_FILTER_REFUSED: &str = "Secret keys can be found by token only with the full token: use token=<token> (or $in), \
     or add type=publishable to compare publishable tokens otherwise";

/// The message of `order=token` that could order secret keys by their digests.
pub const TOKEN_ORDER_REFUSED: &str = "Keys can be ordered by token only together with type=publishable";

/// Whether the filter keeps to publishable keys (a top-level `type` of `publishable` only).
fn publishable_only(filter: &ApiKeyFilter) -> bool {
    filter.conditions.iter().any(|c| {
        c.field == ApiKeyField::Type
            && matches!(c.op, Op::Eq | Op::In)
            && !c.values.is_empty()
            && c.values
                .iter()
                .all(|v| matches!(v, crate::filter::Value::Text(t) if t == ApiKeyType::Publishable.as_str()))
    })
}

/// Refuses `token` conditions other than equality with full tokens, and `order=token`, unless
/// the filter keeps to publishable keys (where Medusa's behaviour stays).
fn check_token_use(filter: &ApiKeyFilter, options: Option<&ListOptions<ApiKeyField>>) -> Result<()> {
    if publishable_only(filter) {
        return Ok(());
    }
    if options.is_some_and(|o| o.order.iter().any(|o| o.field == ApiKeyField::Token)) {
        return Err(Error::invalid_data(TOKEN_ORDER_REFUSED));
    }
    fn walk(f: &ApiKeyFilter) -> bool {
        let full_token = |v: &crate::filter::Value| matches!(v, crate::filter::Value::Text(t) if ["sk_", "pk_", "rk_"].iter().any(|p| t.starts_with(p)));
        f.conditions
            .iter()
            .filter(|c| c.field == ApiKeyField::Token)
            .all(|c| matches!(c.op, Op::Eq | Op::In) && c.values.iter().all(full_token))
            && f.and.iter().all(walk)
            && f.or.iter().all(walk)
    }
    if walk(filter) {
        Ok(())
    } else {
        Err(Error::invalid_data(TOKEN_FILTER_REFUSED))
    }
}

fn stored_token_filter(filter: &ApiKeyFilter) -> ApiKeyFilter {
    let mut f = filter.clone();
    f.map_text_values(ApiKeyField::Token, &|v| match token::parse(v) {
        Ok(t) => t.stored_form(),
        Err(_) => v.to_owned(),
    });
    f
}

/// The module's answer for a key that does not exist.
pub fn not_found(id: &ApiKeyId) -> Error {
    Error::not_found(format!("ApiKey with id: {id} was not found"))
}

fn join_ids<T: AsRef<str>>(ids: &[T]) -> String {
    ids.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(", ")
}

/// Drops repeats, keeping first occurrences in order (error messages list ids as given).
pub(crate) fn dedup<T: Clone + Ord>(items: &[T]) -> Vec<T> {
    let mut seen = std::collections::BTreeSet::new();
    items.iter().filter(|i| seen.insert((*i).clone())).cloned().collect()
}

pub(crate) fn unexpected_block(b: Blocked) -> Error {
    Error::new(
        ErrorKind::Unexpected,
        format!("store reported an unexpected refusal: {b:?}"),
    )
}
