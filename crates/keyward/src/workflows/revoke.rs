//! `revoke-api-keys`: the rules and the instant fixed first, then the revocation; a revocation
//! that took effect is never undone.

use keyward_flow::{Output, Step, StepResponse, Workflow};
use serde::{Deserialize, Serialize};

use crate::actor::Actor;
use crate::error::{Error, ErrorKind, Result};
use crate::events::EventName;
use crate::filter::ApiKeyFilter;
use crate::id::ApiKeyId;
use crate::model::{ApiKey, ApiKeyType, RevokeApiKey};
use crate::policy::Permission;
use crate::service::Keyward;
use crate::store::{KeyShape, Revocation, RevocationUndo, RevokeOnce};

use super::{Cx, REVOKE_API_KEYS, Workflows, events, retried, step_error};

/// `revoke-api-keys`: revoke these keys now, or `revoke_in` seconds from now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeApiKeysInput {
    pub ids: Vec<ApiKeyId>,
    pub revoked_by: String,
    pub revoke_in: Option<i64>,
    /// Who revokes (the system in runs recorded before actors were).
    #[serde(default)]
    pub actor: Actor,
}

/// A revocation fixed in time, with the revocations to put back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokePlan {
    pub ids: Vec<ApiKeyId>,
    pub revoked_by: String,
    pub revoked_at: crate::Timestamp,
    pub previous: Vec<Revocation>,
    /// Which keys the writing transaction refuses to revoke again.
    #[serde(default)]
    pub once: RevokeOnce,
    /// A roll's: the key must still look as its successor copied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unchanged: Option<KeyShape>,
    /// A key revokes: a scheduled revocation may come forward, never move later.
    #[serde(default)]
    pub forward_only: bool,
}

/// The revocation as planned, as the revoke step reads it.
const REVOCATION_PLAN: Output<RevokePlan> = Output::named("prepare-revocation");

/// `prepare-revocation`: checks the revoke rules and fixes the instant.
pub fn prepare_revocation_step() -> Step<Keyward, RevokeApiKeysInput, RevokePlan> {
    Step::named(REVOCATION_PLAN, |input: RevokeApiKeysInput, cx: Cx| async move {
        let plan = cx
            .container()
            .plan_revocation(&input.actor, &input.ids, &input.revoked_by, input.revoke_in)
            .await
            .map_err(step_error)?;
        Ok(StepResponse::new(plan))
    })
    .no_compensation()
}

/// The keys `revoke-api-keys` revoked, as later steps and results read them.
pub(crate) const REVOKED_KEYS: Output<Vec<ApiKey>> = Output::named("revoke-api-keys");

/// `revoke-api-keys`: applies a planned revocation (secret keys once, checked in the writing
/// transaction). Compensation puts the previous revocations back where the keys still hold this
/// run's — but never makes a key valid again once its revocation took effect.
pub fn revoke_api_keys_step() -> Step<Keyward, RevokePlan, Vec<ApiKey>> {
    retried(Step::named(REVOKED_KEYS, |plan: RevokePlan, cx: Cx| async move {
        let keys = cx
            .container()
            .apply_revocation(&plan, cx.may_repeat())
            .await
            .map_err(step_error)?;
        Ok(events(
            StepResponse::new(keys).compensate_with(revocation_undo(&plan)),
            EventName::ApiKeyRevoked,
            &plan.ids,
        ))
    }))
    .compensate(|undo: Option<Vec<RevocationUndo>>, cx: Cx| async move {
        let undo = match undo {
            Some(u) => u,
            None => revocation_undo(&cx.input::<RevokePlan>()?),
        };
        for conflict in cx.container().undo_revocations(&undo).await.map_err(step_error)? {
            cx.conflict(conflict);
        }
        Ok(())
    })
}

/// What a planned revocation writes, beside what it replaces.
pub(super) fn revocation_undo(plan: &RevokePlan) -> Vec<RevocationUndo> {
    plan.previous
        .iter()
        .map(|previous| RevocationUndo {
            written: Revocation {
                id: previous.id.clone(),
                revoked_by: Some(plan.revoked_by.clone()),
                revoked_at: Some(plan.revoked_at),
            },
            previous: previous.clone(),
        })
        .collect()
}

/// `revoke-api-keys`: prepare (rules, instant), then revoke.
pub fn revoke_api_keys_workflow() -> Workflow<Keyward, RevokeApiKeysInput, Vec<ApiKey>> {
    Workflow::<Keyward, RevokeApiKeysInput, Vec<ApiKey>>::new(REVOKE_API_KEYS)
        .step(&prepare_revocation_step(), |d| d.input())
        .step(&revoke_api_keys_step(), |d| d.output(REVOCATION_PLAN))
        .returns(|d| d.output(REVOKED_KEYS))
}

impl Workflows {
    /// Revokes one key now or after `revoke_in` seconds.
    pub async fn revoke_api_key(&self, actor: &Actor, id: &ApiKeyId, data: &RevokeApiKey) -> Result<ApiKey> {
        self.on_key(&self.revoke, revocation(actor, vec![id.clone()], data), id)
            .await
    }

    /// Revokes every key `selector` matches (Medusa's `{ selector, revoke }`); a selector that
    /// matches nothing revokes nothing.
    pub async fn revoke_api_keys(
        &self,
        actor: &Actor,
        selector: &ApiKeyFilter,
        data: &RevokeApiKey,
    ) -> Result<Vec<ApiKey>> {
        self.on_matching(&self.revoke, selector, |ids| revocation(actor, ids, data))
            .await
    }
}

fn revocation(actor: &Actor, ids: Vec<ApiKeyId>, data: &RevokeApiKey) -> RevokeApiKeysInput {
    RevokeApiKeysInput {
        ids,
        revoked_by: data.revoked_by.clone(),
        revoke_in: data.revoke_in,
        actor: actor.clone(),
    }
}

impl Keyward {
    /// Puts revocations back where the keys still hold what this run wrote, and reports what
    /// it left alone. A revocation that has taken effect is never undone (revocation is
    /// monotonic), unless the key was already revoked before this run; the store judges that
    /// inside its transaction.
    pub(crate) async fn undo_revocations(&self, undo: &[RevocationUndo]) -> Result<Vec<String>> {
        if undo.is_empty() {
            return Ok(Vec::new());
        }
        let restored = self.store.restore_revocations(undo, self.clock.as_ref()).await?;
        let left: Vec<&RevocationUndo> = undo.iter().filter(|u| !restored.contains(&u.previous.id)).collect();
        let ids: Vec<ApiKeyId> = left.iter().map(|u| u.previous.id.clone()).collect();
        let current = self.keys_by_ids(&ids).await?;
        let now = self.now();
        let mut conflicts = Vec::new();
        for u in left {
            let Some(key) = current.iter().find(|k| k.id == u.previous.id) else {
                continue;
            };
            if Revocation::of(key) == u.previous {
                continue;
            }
            conflicts.push(if Revocation::of(key) == u.written && key.is_revoked_at(now) {
                format!(
                    "api key {} stays revoked: a revocation in effect is never undone",
                    key.id
                )
            } else {
                format!(
                    "api key {}: its revocation changed after this run wrote it; left as it is",
                    key.id
                )
            });
        }
        Ok(conflicts)
    }

    /// Checks a revocation (every key exists, the actor may change each, a revoker is named, no
    /// secret key is revoked twice) and fixes its instant.
    pub(crate) async fn plan_revocation(
        &self,
        actor: &Actor,
        ids: &[ApiKeyId],
        revoked_by: &str,
        revoke_in: Option<i64>,
    ) -> Result<RevokePlan> {
        actor.require(Permission::ApiKeysWrite)?;
        let keys = self.keys_by_ids(ids).await?;
        if let Some(missing) = ids.iter().find(|id| !keys.iter().any(|k| &k.id == *id)) {
            return Err(crate::service::not_found(missing));
        }
        for k in &keys {
            actor.may_change(k)?;
        }
        let revoked_by = actor.recorded_as(revoked_by);
        if revoked_by.is_empty() {
            return Err(Error::invalid_data(crate::service::REVOKED_BY_REQUIRED));
        }
        let now = self.now();
        let revoked_at = match revoke_in {
            Some(seconds) if seconds > 0 => now.plus_seconds(seconds),
            _ => now,
        };
        for k in &keys {
            actor.may_revoke_at(k, revoked_at)?;
        }
        let twice = keys
            .iter()
            .filter(|k| k.key_type == ApiKeyType::Secret && k.is_revoked_at(now))
            .count();
        if twice > 0 {
            return Err(crate::service::already_revoked(twice));
        }
        Ok(RevokePlan {
            ids: ids.to_vec(),
            revoked_by: revoked_by.to_owned(),
            revoked_at,
            previous: keys.iter().map(Revocation::of).collect(),
            once: RevokeOnce::Secret,
            unchanged: None,
            forward_only: actor.as_key().is_some(),
        })
    }

    /// Applies a planned revocation. When `may_repeat` (the step runs again after a crash or a
    /// failed attempt) and the keys already carry exactly this revocation, the earlier attempt
    /// got through and that counts as done. On a first attempt an equal revocation was another
    /// run's, and the guarded write decides.
    pub(crate) async fn apply_revocation(&self, plan: &RevokePlan, may_repeat: bool) -> Result<Vec<ApiKey>> {
        let current = self.keys_by_ids(&plan.ids).await?;
        let applied = may_repeat
            && !current.is_empty()
            && current.iter().all(|k| {
                k.revoked_at == Some(plan.revoked_at) && k.revoked_by.as_deref() == Some(plan.revoked_by.as_str())
            });
        if !applied {
            match self
                .store
                .revoke_api_keys(
                    &plan.ids,
                    &plan.revoked_by,
                    plan.revoked_at,
                    self.clock.as_ref(),
                    plan.once,
                    plan.unchanged.as_ref(),
                    plan.forward_only,
                )
                .await?
            {
                Ok(()) => {}
                Err(crate::store::Blocked::AlreadyRevoked(ids)) => {
                    let publishable = current
                        .iter()
                        .any(|k| ids.contains(&k.id) && k.key_type == ApiKeyType::Publishable);
                    let key_type = if publishable {
                        ApiKeyType::Publishable
                    } else {
                        ApiKeyType::Secret
                    };
                    return Err(crate::service::already_revoked_of(key_type, ids.len()));
                }
                Err(crate::store::Blocked::Postponed(ids)) => {
                    return Err(Error::forbidden(format!(
                        "API key {} is to be revoked sooner since this revocation was planned; a key may bring a \
                         revocation forward, not postpone it",
                        ids.iter().map(ApiKeyId::as_str).collect::<Vec<_>>().join(", ")
                    )));
                }
                Err(crate::store::Blocked::Changed(id)) => {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        format!("Api key {id} changed while it was being rolled; nothing was changed, try again"),
                    ));
                }
                Err(other) => return Err(crate::service::unexpected_block(other)),
            }
        }
        let keys = self.keys_by_ids(&plan.ids).await?;
        match plan.ids.first() {
            // Every key was deleted since the plan: nothing was written, and in a serial order
            // this revoke came after the delete.
            Some(first) if keys.is_empty() => Err(crate::service::not_found(first)),
            _ => Ok(keys),
        }
    }
}
