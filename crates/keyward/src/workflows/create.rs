//! `create-api-keys`: keys get their ids first (so a repeated step knows its own rows), then are
//! written; the `api_keys_created` hook runs after.

use keyward_flow::{Output, Step, StepResponse, Workflow};
use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::actor::Actor;
use crate::error::{Error, Result};
use crate::events::EventName;
use crate::id::ApiKeyId;
use crate::model::expiry_in;
use crate::model::{ApiKey, ApiKeyType, CreateApiKey, CreatedApiKey};
use crate::policy::Permission;
use crate::service::Keyward;
use crate::store::RevokeOnce;
use crate::token::PlainToken;

use super::{CREATE_API_KEYS, Cx, DISCARDED_BY, Workflows, events, retried, step_error};

/// The hook of `create-api-keys`, run after the keys exist with `{api_keys}`.
pub const API_KEYS_CREATED: &str = "api_keys_created";

/// The input of the `api_keys_created` hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeysCreated {
    pub api_keys: Vec<ApiKey>,
}

/// `create-api-keys`: the keys to create, and who creates them. A run recorded before actors
/// were (a bare list of keys) reads as the system's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "CreateInputForms")]
pub struct CreateApiKeysInput {
    pub keys: Vec<CreateApiKey>,
    #[serde(default)]
    pub actor: Actor,
}

impl CreateApiKeysInput {
    pub fn new(actor: &Actor, keys: Vec<CreateApiKey>) -> Self {
        Self {
            keys,
            actor: actor.clone(),
        }
    }
}

/// The forms a recorded `create-api-keys` input takes.
#[derive(Deserialize)]
#[serde(untagged)]
enum CreateInputForms {
    Now {
        keys: Vec<CreateApiKey>,
        #[serde(default)]
        actor: Actor,
    },
    Before(Vec<CreateApiKey>),
}

impl From<CreateInputForms> for CreateApiKeysInput {
    fn from(f: CreateInputForms) -> Self {
        match f {
            CreateInputForms::Now { keys, actor } => Self { keys, actor },
            CreateInputForms::Before(keys) => Self {
                keys,
                actor: Actor::System,
            },
        }
    }
}

/// The keys as planned (ids fixed), as the create step reads them.
pub const PLANNED_KEYS: Output<Vec<CreateApiKey>> = Output::named("prepare-api-keys");

/// `prepare-api-keys`: gives every key to create its id, so the create step can recognise its
/// own work if it is invoked again after a crash, and checks what the actor may create.
pub fn prepare_api_keys_step() -> Step<Keyward, CreateApiKeysInput, Vec<CreateApiKey>> {
    Step::named(PLANNED_KEYS, |input: CreateApiKeysInput, cx: Cx| async move {
        Ok(StepResponse::new(
            cx.container()
                .plan_api_keys(input.keys, &input.actor)
                .map_err(step_error)?,
        ))
    })
    .no_compensation()
}

pub(super) fn planned_ids(keys: &[CreateApiKey]) -> Vec<ApiKeyId> {
    keys.iter().filter_map(|k| k.id.clone()).collect()
}

/// The keys `create-api-keys` wrote, as later steps and results read them.
pub const CREATED_KEYS: Output<Vec<ApiKey>> = Output::named("create-api-keys");

/// `create-api-keys`: inserts the planned keys. The plain tokens leave as a private value (never
/// written to the run log). Compensation revokes the keys, then deletes them.
pub fn create_api_keys_step() -> Step<Keyward, Vec<CreateApiKey>, Vec<ApiKey>> {
    retried(Step::named(
        CREATED_KEYS,
        |planned: Vec<CreateApiKey>, cx: Cx| async move {
            let kw = cx.container();
            let ids = planned_ids(&planned);
            let existing = if cx.may_repeat() {
                kw.keys_by_ids(&ids).await.map_err(step_error)?
            } else {
                Vec::new()
            };
            if !ids.is_empty() && existing.len() == ids.len() {
                // Written by an earlier attempt whose record was lost in a crash. On a first
                // attempt a key with a planned id is someone else's: the insert refuses it.
                return Ok(events(
                    StepResponse::new(existing).compensate_with(&ids),
                    EventName::ApiKeyCreated,
                    &ids,
                ));
            }
            let created = kw.create_api_keys(planned).await.map_err(step_error)?;
            let keys: Vec<ApiKey> = created.iter().map(|c| c.key.clone()).collect();
            let tokens: Vec<PlainToken> = created.into_iter().map(|c| c.token).collect();
            let response = StepResponse::new(keys).compensate_with(&ids).private(tokens);
            Ok(events(response, EventName::ApiKeyCreated, &ids))
        },
    ))
    .compensate(|ids: Option<Vec<ApiKeyId>>, cx: Cx| async move {
        let ids = match ids {
            Some(ids) => ids,
            None => planned_ids(&cx.input::<Vec<CreateApiKey>>()?),
        };
        cx.container().discard_api_keys(&ids).await.map_err(step_error)
    })
}

/// `create-api-keys`: prepare, create, then the `api_keys_created` hook.
pub fn create_api_keys_workflow() -> Workflow<Keyward, CreateApiKeysInput, Vec<ApiKey>> {
    Workflow::<Keyward, CreateApiKeysInput, Vec<ApiKey>>::new(CREATE_API_KEYS)
        // Runs are automatic ids unless a caller names one (a subscriber, an idempotency key):
        // then a second run with that id returns the first one's result.
        .idempotent(true)
        .step(&prepare_api_keys_step(), |d| d.input())
        .step(&create_api_keys_step(), |d| d.output(PLANNED_KEYS))
        .hook(API_KEYS_CREATED, |d| {
            Ok(ApiKeysCreated {
                api_keys: d.output(CREATED_KEYS)?,
            })
        })
        .returns(|d| d.output(CREATED_KEYS))
}

impl Workflows {
    /// Creates keys as `actor`; the plain tokens are in this answer and nowhere else.
    pub async fn create_api_keys(&self, actor: &Actor, input: Vec<CreateApiKey>) -> Result<Vec<CreatedApiKey>> {
        if input.is_empty() {
            return Ok(Vec::new());
        }
        let run = self.run(&self.create, CreateApiKeysInput::new(actor, input)).await?;
        let tokens: Vec<PlainToken> = run
            .private("create-api-keys")
            .ok_or_else(|| Error::unexpected("the new keys' tokens did not come back from the create step"))?;
        let keys = run.result.unwrap_or_default();
        if keys.len() != tokens.len() {
            return Err(Error::unexpected(
                "the create step returned keys and tokens that do not match",
            ));
        }
        Ok(keys
            .into_iter()
            .zip(tokens)
            .map(|(key, token)| CreatedApiKey { key, token })
            .collect())
    }

    pub async fn create_api_key(&self, actor: &Actor, input: CreateApiKey) -> Result<CreatedApiKey> {
        self.create_api_keys(actor, vec![input])
            .await?
            .pop()
            .ok_or_else(|| Error::unexpected("create returned no key"))
    }
}

/// When a key to create expires, checked: in the future, given one way.
fn planned_expiry(k: &CreateApiKey, now: Timestamp) -> Result<Option<Timestamp>> {
    match (k.expires_in, k.expires_at) {
        (Some(_), Some(_)) => Err(Error::invalid_data("Give expires_in or expires_at, not both")),
        (Some(s), None) => expiry_in(now, s).map(Some),
        (None, Some(at)) if at <= now => Err(Error::invalid_data(format!(
            "expires_at must be in the future, but got: {at}"
        ))),
        (None, at) => Ok(at),
    }
}

impl Keyward {
    /// Gives each key to create an id (keeping ids already given) and its expiry as an instant,
    /// and checks `actor` may create it: a key acting never makes a secret key that holds more
    /// than it does. The key records the actor as its creator.
    pub(crate) fn plan_api_keys(&self, keys: Vec<CreateApiKey>, actor: &Actor) -> Result<Vec<CreateApiKey>> {
        actor.require(Permission::ApiKeysWrite)?;
        let now = self.now();
        keys.into_iter()
            .map(|mut k| {
                if k.id.is_none() {
                    k.id = Some(
                        ApiKeyId::generate(self.ids(), now, self.entropy.as_ref())
                            .map_err(|e| Error::unexpected(e.to_string()))?,
                    );
                }
                k.expires_at = planned_expiry(&k, now)?;
                k.expires_in = None;
                crate::policy::check_length("title", &k.title, crate::policy::MAX_NAME_CHARS)?;
                k.policy = std::mem::take(&mut k.policy).checked(k.key_type)?;
                if k.key_type == ApiKeyType::Secret {
                    actor.may_grant(&k.policy, k.expires_at)?;
                }
                k.created_by = actor.recorded_as(&k.created_by).to_owned();
                Ok(k)
            })
            .collect()
    }

    /// Removes keys whatever their state, the module's way: revoke what is not revoked, then
    /// delete. Compensation of create.
    pub(crate) async fn discard_api_keys(&self, ids: &[ApiKeyId]) -> Result<()> {
        let now = self.now();
        let live: Vec<ApiKeyId> = self
            .keys_by_ids(ids)
            .await?
            .into_iter()
            .filter(|k| !k.is_revoked_at(now))
            .map(|k| k.id)
            .collect();
        if !live.is_empty() {
            // Blocked only if it got revoked meanwhile, which is as good.
            let _ = self
                .store
                .revoke_api_keys(
                    &live,
                    DISCARDED_BY,
                    now,
                    self.clock.as_ref(),
                    RevokeOnce::Secret,
                    None,
                    false,
                )
                .await?;
        }
        self.delete_api_keys(ids).await.map(|_| ())
    }
}
