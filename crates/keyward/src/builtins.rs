//! keyward's built-in subscriber and jobs: a key for every new admin user (opt-in), the purge
//! of keys revoked long ago (opt-in), and the notices of keys' expiries (on by default).

use std::time::Duration;

use keyward_flow::{Event, Job, RunOptions, Schedule, StepError, Subscriber};

use crate::error::Error;
use crate::filter::{ApiKeyField, ApiKeyFilter, ListOptions, Op, Value};
use crate::model::{ApiKeyType, CreateApiKey};
use crate::service::Keyward;
use crate::workflows::{Workflows, from_flow, step_error};

/// The subscriber id of [`key_on_user_created`].
pub const KEY_ON_USER_CREATED: &str = "keyward:key-on-user-created";

/// The job name of [`purge_revoked_keys`].
pub const PURGE_REVOKED_KEYS: &str = "keyward:purge-revoked-keys";

/// The job name of [`notify_api_key_expiry`].
pub const EXPIRY_NOTICES: &str = "keyward:expiry-notices";

/// On `user.created`, creates a key of `key_type` for the new user (`created_by` = their id).
/// The run's transaction id comes from the event's id and `create-api-keys` is idempotent, so a
/// delivery retried after it created the key (a crash, a timeout) does not create a second one.
pub fn key_on_user_created(flows: &Workflows, key_type: ApiKeyType) -> Subscriber<Keyward> {
    let flows = flows.clone();
    Subscriber::new(
        KEY_ON_USER_CREATED,
        &[crate::EventName::UserCreated.as_str()],
        move |event: Event, _kw| {
            let flows = flows.clone();
            async move { create_key_for_user(&flows, key_type, &event).await }
        },
    )
}

/// What [`key_on_user_created`] does with one `user.created` event.
pub async fn create_key_for_user(flows: &Workflows, key_type: ApiKeyType, event: &Event) -> Result<(), StepError> {
    let user = event.data["id"]
        .as_str()
        .ok_or_else(|| StepError::permanent("user.created carries no user id"))?
        .to_owned();
    let title = format!("Key for {}", event.data["email"].as_str().unwrap_or(&user));
    flows
        .create_api_keys_once(
            &crate::Actor::System,
            &format!("user-created:{}", event.id),
            vec![CreateApiKey::new(title, key_type, user)],
        )
        .await
        .map_err(step_error)?;
    Ok(())
}

/// Every hour, deletes keys revoked more than `days` days ago (through `delete-api-keys`).
pub fn purge_revoked_keys(flows: &Workflows, days: u32) -> Result<Job<Keyward>, Error> {
    let schedule = Schedule::cron("0 * * * *").map_err(from_flow)?;
    let flows = flows.clone();
    Ok(Job::new(PURGE_REVOKED_KEYS, schedule, move |_kw| {
        let flows = flows.clone();
        async move {
            let purged = flows
                .purge_revoked(Duration::from_secs(u64::from(days) * 86_400))
                .await
                .map_err(step_error)?;
            if purged > 0 {
                tracing::info!(purged, days, "purged keys revoked long ago");
            }
            Ok(())
        }
    }))
}

/// Every minute, sends the expiry notices due (`api_key.expiring` `warning` ahead of a key's
/// expiry, `api_key.expired` after it), each once, through `notify-api-key-expiry`.
pub fn notify_api_key_expiry(flows: &Workflows, warning: Duration) -> Result<Job<Keyward>, Error> {
    let schedule = Schedule::every(Duration::from_secs(60)).map_err(from_flow)?;
    let flows = flows.clone();
    Ok(Job::new(EXPIRY_NOTICES, schedule, move |_kw| {
        let flows = flows.clone();
        async move {
            let sent = flows.notify_api_key_expiry(warning).await.map_err(step_error)?;
            if !sent.is_empty() {
                tracing::info!(notices = sent.len(), "sent expiry notices");
            }
            Ok(())
        }
    }))
}

impl Workflows {
    /// Deletes keys revoked more than `age` ago, in batches of 100; returns how many.
    pub async fn purge_revoked(&self, age: Duration) -> crate::Result<usize> {
        let cutoff = self
            .kw()
            .now()
            .plus_seconds(-i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
        let mut total = 0;
        loop {
            let mut filter = ApiKeyFilter::new();
            filter.push(ApiKeyField::RevokedAt, Op::Lt, vec![Value::Time(cutoff)])?;
            let old = self.kw().list_api_keys(&filter, &ListOptions::page(0, 100)).await?;
            if old.is_empty() {
                return Ok(total);
            }
            let ids: Vec<_> = old.into_iter().map(|k| k.id).collect();
            self.delete_api_keys(&crate::Actor::System, &ids).await?;
            total += ids.len();
        }
    }

    /// Runs `create-api-keys` under `transaction_id`: the first call creates the keys, later
    /// calls return the keys it created (without tokens) instead of creating more.
    pub async fn create_api_keys_once(
        &self,
        actor: &crate::Actor,
        transaction_id: &str,
        input: Vec<CreateApiKey>,
    ) -> crate::Result<Vec<crate::ApiKey>> {
        let run = self
            .engine()
            .run(
                self.create_handle(),
                crate::workflows::CreateApiKeysInput::new(actor, input),
                RunOptions::default().transaction_id(transaction_id),
            )
            .await
            .map_err(from_flow)?;
        Ok(run.result.unwrap_or_default())
    }
}
