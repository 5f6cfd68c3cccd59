//! `update-api-keys`: a new title or expiry, put back where the key still has this run's.

use keyward_flow::{Output, Step, StepResponse, Workflow};
use serde::{Deserialize, Serialize};

use crate::actor::Actor;
use crate::error::{Error, Result};
use crate::events::EventName;
use crate::filter::ApiKeyFilter;
use crate::id::ApiKeyId;
use crate::model::{ApiKey, ApiKeyType};
use crate::model::{KeyPolicy, UpdateApiKey};
use crate::policy::Permission;
use crate::service::Keyward;
use crate::store::UpdateUndo;

use super::{Cx, UPDATE_API_KEYS, Workflows, events, retried, step_error};

/// `update-api-keys`: set what is given (title, expiry) on these keys. Runs recorded before
/// expiries existed (a title only) read as they were written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateApiKeysInput {
    pub ids: Vec<ApiKeyId>,
    #[serde(flatten)]
    pub update: UpdateApiKey,
    /// Who updates (the system in runs recorded before actors were).
    #[serde(default)]
    pub actor: Actor,
}

/// An update, checked, with what to put back: each key's title and expiry before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatePlan {
    pub ids: Vec<ApiKeyId>,
    #[serde(flatten)]
    pub update: UpdateApiKey,
    /// (id, title) before the update.
    pub previous: Vec<(ApiKeyId, String)>,
    /// (id, expiry) before the update.
    #[serde(default)]
    pub previous_expiry: Vec<(ApiKeyId, Option<crate::Timestamp>)>,
    /// (id, metadata, permissions and allowed addresses) before the update.
    #[serde(default)]
    pub previous_policy: Vec<(ApiKeyId, KeyPolicy)>,
}

/// The keys as loaded before their update.
const LOADED_KEYS: Output<Vec<ApiKey>> = Output::named("load-api-keys");

/// `load-api-keys`: the keys, all of which must exist (`not_found` names the first missing).
pub fn load_api_keys_step() -> Step<Keyward, Vec<ApiKeyId>, Vec<ApiKey>> {
    Step::named(LOADED_KEYS, |ids: Vec<ApiKeyId>, cx: Cx| async move {
        let keys = cx.container().keys_by_ids(&ids).await.map_err(step_error)?;
        if let Some(missing) = ids.iter().find(|id| !keys.iter().any(|k| &k.id == *id)) {
            return Err(step_error(crate::service::not_found(missing)));
        }
        Ok(StepResponse::new(keys))
    })
    .no_compensation()
}

/// The keys as updated.
const UPDATED_KEYS: Output<Vec<ApiKey>> = Output::named("update-api-keys");

/// `update-api-keys`: sets the title and expiry given; compensation puts the old ones back
/// where the keys still hold this run's.
pub fn update_api_keys_step() -> Step<Keyward, UpdatePlan, Vec<ApiKey>> {
    retried(Step::named(UPDATED_KEYS, |plan: UpdatePlan, cx: Cx| async move {
        let kw = cx.container();
        let updated = kw
            .store()
            .update_api_keys(&plan.ids, &plan.update, kw.now())
            .await
            .map_err(step_error)?;
        let keys = kw.keys_by_ids(&plan.ids).await.map_err(step_error)?;
        let undo = update_undo(&plan, Some(&updated));
        Ok(events(
            StepResponse::new(keys).compensate_with(undo),
            EventName::ApiKeyUpdated,
            &plan.ids,
        ))
    }))
    .compensate(|undo: Option<Vec<UpdateUndo>>, cx: Cx| async move {
        let undo = match undo {
            Some(u) => u,
            None => update_undo(&cx.input::<UpdatePlan>()?, None),
        };
        let kw = cx.container();
        let restored = kw
            .store()
            .restore_api_key_updates(&undo, kw.now())
            .await
            .map_err(step_error)?;
        let left: Vec<&UpdateUndo> = undo.iter().filter(|u| !restored.contains(&u.id)).collect();
        let ids: Vec<ApiKeyId> = left.iter().map(|u| u.id.clone()).collect();
        let now = kw.keys_by_ids(&ids).await.map_err(step_error)?;
        for u in left {
            match now.iter().find(|k| k.id == u.id) {
                Some(k)
                    if k.title != u.previous
                        || k.expires_at != u.previous_expires_at
                        || k.policy != u.previous_policy =>
                {
                    cx.conflict(format!(
                        "api key {} has the title {:?} and expiry {:?}, not the {:?} and {:?} this run wrote (or \
                         other metadata, permissions or allowed addresses); left as it is",
                        u.id, k.title, k.expires_at, u.written, u.written_expires_at
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    })
}

/// What an update wrote (to the keys `updated` names, or every planned key when unknown).
pub(super) fn update_undo(plan: &UpdatePlan, updated: Option<&[ApiKeyId]>) -> Vec<UpdateUndo> {
    plan.previous
        .iter()
        .filter(|(id, _)| updated.is_none_or(|u| u.contains(id)))
        .map(|(id, previous)| {
            let previous_expires_at = plan
                .previous_expiry
                .iter()
                .find(|(k, _)| k == id)
                .and_then(|(_, at)| *at);
            let previous_policy = plan
                .previous_policy
                .iter()
                .find(|(k, _)| k == id)
                .map(|(_, p)| p.clone())
                .unwrap_or_default();
            UpdateUndo {
                id: id.clone(),
                written: plan.update.title.clone().unwrap_or_else(|| previous.clone()),
                previous: previous.clone(),
                written_expires_at: plan.update.expires_at.unwrap_or(previous_expires_at),
                previous_expires_at,
                written_policy: plan.update.applied_to(&previous_policy),
                previous_policy,
            }
        })
        .collect()
}

/// The policy fields of an update, checked: metadata within bounds, an address list of one
/// block at least, and permissions only for keys that are restricted already (a key's token
/// prefix says whether it is restricted, so an unrestricted key stays so, and the reverse).
fn check_policy_update(update: &mut UpdateApiKey, keys: &[ApiKey]) -> Result<()> {
    if let Some(t) = &update.title {
        crate::policy::check_length("title", t, crate::policy::MAX_NAME_CHARS)?;
    }
    if let Some(Some(m)) = &update.metadata {
        crate::policy::check_metadata(m)?;
    }
    if let Some(Some(a)) = &mut update.allowed_ips {
        *a = crate::policy::checked_allowed_ips(std::mem::take(a))?;
    }
    if let Some(p) = update.permissions.take() {
        if let Some(k) = keys.iter().find(|k| k.policy.permissions.is_none()) {
            return Err(Error::invalid_data(format!(
                "API key {} is not a restricted key; permissions are given when a restricted key is created",
                k.id
            )));
        }
        update.permissions = Some(crate::policy::checked_permissions(p)?);
    }
    Ok(())
}

/// What the actor may update: keys it may change, and a secret key only into one that holds
/// nothing beyond the actor (its permissions, addresses and expiry as they will be).
fn check_actor(actor: &Actor, update: &UpdateApiKey, keys: &[ApiKey]) -> Result<()> {
    actor.require(Permission::ApiKeysWrite)?;
    for k in keys {
        actor.may_change(k)?;
        if k.key_type == ApiKeyType::Secret {
            let expires_at = update.expires_at.unwrap_or(k.expires_at);
            actor.may_grant(&update.applied_to(&k.policy), expires_at)?;
        }
    }
    Ok(())
}

/// The update checked against the keys as loaded: an expiry must lie ahead, and an expired key
/// keeps its expiry (as a revoked key stays revoked).
fn plan_update(mut input: UpdateApiKeysInput, keys: Vec<ApiKey>, now: crate::Timestamp) -> Result<UpdatePlan> {
    check_actor(&input.actor, &input.update, &keys)?;
    check_policy_update(&mut input.update, &keys)?;
    if let Some(expiry) = input.update.expires_at {
        if let Some(at) = expiry
            && at <= now
        {
            return Err(Error::invalid_data(format!(
                "expires_at must be in the future, but got: {at}"
            )));
        }
        if let Some(k) = keys.iter().find(|k| k.is_expired_at(now)) {
            return Err(Error::invalid_data(format!(
                "API key {} has expired; its expiry cannot change",
                k.id
            )));
        }
    }
    Ok(UpdatePlan {
        ids: input.ids,
        update: input.update,
        previous_expiry: keys.iter().map(|k| (k.id.clone(), k.expires_at)).collect(),
        previous_policy: keys.iter().map(|k| (k.id.clone(), k.policy.clone())).collect(),
        previous: keys.into_iter().map(|k| (k.id, k.title)).collect(),
    })
}

/// The plan, as the update step reads it.
const PLANNED_UPDATE: Output<UpdatePlan> = Output::named("plan-api-key-update");

/// `plan-api-key-update`: checks the update against the loaded keys and records what to put back.
pub fn plan_api_key_update_step() -> Step<Keyward, (UpdateApiKeysInput, Vec<ApiKey>), UpdatePlan> {
    Step::named(
        PLANNED_UPDATE,
        |(input, keys): (UpdateApiKeysInput, Vec<ApiKey>), cx: Cx| async move {
            let now = cx.container().now();
            Ok(StepResponse::new(plan_update(input, keys, now).map_err(step_error)?))
        },
    )
    .no_compensation()
}

/// `update-api-keys`: load (404 for a missing key), plan (the rules), then write.
pub fn update_api_keys_workflow() -> Workflow<Keyward, UpdateApiKeysInput, Vec<ApiKey>> {
    Workflow::<Keyward, UpdateApiKeysInput, Vec<ApiKey>>::new(UPDATE_API_KEYS)
        .step(&load_api_keys_step(), |d| Ok(d.input()?.ids))
        .step(&plan_api_key_update_step(), |d| {
            Ok((d.input()?, d.output(LOADED_KEYS)?))
        })
        .step(&update_api_keys_step(), |d| d.output(PLANNED_UPDATE))
        .returns(|d| d.output(UPDATED_KEYS))
}

impl Workflows {
    /// Sets the title of one key (`not_found` when it does not exist).
    pub async fn update_api_key(&self, actor: &Actor, id: &ApiKeyId, title: &str) -> Result<ApiKey> {
        self.update_api_key_with(actor, id, &UpdateApiKey::title(title)).await
    }

    /// Sets what `update` gives (title, expiry) on one key (`not_found` when it does not exist).
    pub async fn update_api_key_with(&self, actor: &Actor, id: &ApiKeyId, update: &UpdateApiKey) -> Result<ApiKey> {
        let input = UpdateApiKeysInput {
            ids: vec![id.clone()],
            update: update.clone(),
            actor: actor.clone(),
        };
        self.on_key(&self.update, input, id).await
    }

    /// Sets what `data` gives on every key `selector` matches (Medusa's `{ selector, update }`).
    pub async fn update_api_keys(
        &self,
        actor: &Actor,
        selector: &ApiKeyFilter,
        data: &UpdateApiKey,
    ) -> Result<Vec<ApiKey>> {
        self.on_matching(&self.update, selector, |ids| UpdateApiKeysInput {
            ids,
            update: data.clone(),
            actor: actor.clone(),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn runs_recorded_before_expiries_existed_still_read() {
        let id = "apk_01OLDRUN";
        let input: UpdateApiKeysInput =
            serde_json::from_value(serde_json::json!({"ids": [id], "title": "new"})).unwrap();
        assert_eq!(input.update, UpdateApiKey::title("new"));
        let plan: UpdatePlan =
            serde_json::from_value(serde_json::json!({"ids": [id], "title": "new", "previous": [[id, "old"]]}))
                .unwrap();
        assert_eq!((plan.update.expires_at, plan.previous_expiry.len()), (None, 0));
        let undo = update_undo(&plan, None);
        assert_eq!((undo[0].written.as_str(), undo[0].previous.as_str()), ("new", "old"));
        assert_eq!((undo[0].written_expires_at, undo[0].previous_expires_at), (None, None));
        let old_undo: Vec<UpdateUndo> =
            serde_json::from_value(serde_json::json!([{"id": id, "written": "new", "previous": "old"}])).unwrap();
        assert_eq!(old_undo, undo);
    }
}
