//! The api-key workflows. Every change to keys made by the server and the CLI runs through one
//! of these, so a failing step is undone and a crash is finished by the next process (or node)
//! instead of leaving half a change: a rolled key either has its replacement and is revoked,
//! or neither happened.
//!
//! Each workflow first *prepares*: a step without side effects reads what the change needs,
//! checks the rules (with the module's exact messages), fixes ids and instants, and snapshots
//! what its compensation will put back. That output is recorded, so a resumed run acts on the
//! same plan. The steps that write are idempotent for their recorded input: a step invoked again
//! after a crash finds its own earlier effect and treats it as done.

use std::sync::Arc;
use std::time::Duration;

use keyward_flow::{
    Engine, FlowError, RunLog, RunOptions, Step, StepContext, StepError, StepResponse, Workflow, WorkflowHandle,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::events::EventName;
use crate::filter::{ApiKeyFilter, ListOptions, SalesChannelField, SalesChannelFilter};
use crate::id::{ApiKeyId, SalesChannelId};
use crate::model::{
    ApiKey, ApiKeyType, CreateApiKey, CreateSalesChannel, CreatedApiKey, RevokeApiKey, SalesChannel, UpdateSalesChannel,
};
use crate::service::Keyward;
use crate::store::{Blocked, KeyShape, Revocation, RevocationUndo, RevokeOnce, StoredKey, TitleUndo};
use crate::token::PlainToken;

/// Workflow names (Medusa's, plus roll).
pub const CREATE_API_KEYS: &str = "create-api-keys";
pub const UPDATE_API_KEYS: &str = "update-api-keys";
pub const REVOKE_API_KEYS: &str = "revoke-api-keys";
pub const DELETE_API_KEYS: &str = "delete-api-keys";
pub const LINK_SALES_CHANNELS_TO_API_KEY: &str = "link-sales-channels-to-api-key";
pub const ROLL_API_KEY: &str = "roll-api-key";
pub const CREATE_SALES_CHANNELS: &str = "create-sales-channels";
pub const UPDATE_SALES_CHANNELS: &str = "update-sales-channels";
pub const DELETE_SALES_CHANNELS: &str = "delete-sales-channels";
pub const CREATE_USERS: &str = "create-users";

/// The hook of `create-api-keys`, run after the keys exist with `{api_keys}`.
pub const API_KEYS_CREATED: &str = "api_keys_created";

/// Who a compensation that removes freshly created keys names as their revoker.
pub const DISCARDED_BY: &str = "keyward:compensation";

type Cx = StepContext<Keyward>;

/// A module error as a step error: only an unreachable database is worth retrying; a broken
/// rule will be broken again.
pub fn step_error(e: Error) -> StepError {
    let retry = e.kind == ErrorKind::Unavailable;
    let unknown = e.outcome_unknown();
    let s = StepError::from_error(e);
    let s = if unknown { s.maybe_applied() } else { s };
    if retry { s } else { s.into_permanent() }
}

/// A workflow error as the module error that caused it (so callers see the exact rule that
/// refused), or as unexpected/unavailable when the engine itself failed.
pub fn from_flow(e: FlowError) -> Error {
    if let FlowError::Failed {
        workflow,
        transaction_id,
        state: keyward_flow::RunState::Failed,
        ..
    } = &e
    {
        tracing::error!(%workflow, %transaction_id, "a workflow run failed and could not be fully compensated");
    }
    match &e {
        FlowError::Failed { .. } => match e.step_error() {
            Some(step) => step
                .downcast_ref::<Error>()
                .cloned()
                .unwrap_or_else(|| Error::unexpected(format!("{e}"))),
            None => Error::unexpected(format!("{e}")),
        },
        FlowError::Log(keyward_flow::LogError::Unavailable(m)) => Error::unavailable(m.clone()),
        FlowError::InProgress { .. } => Error::new(ErrorKind::Conflict, e.to_string()),
        _ => Error::unexpected(e.to_string()),
    }
}

/// Steps that only write the database retry twice when it is briefly unreachable.
fn retried<C: Send + Sync + 'static, I, O>(step: Step<C, I, O>) -> Step<C, I, O> {
    step.max_retries(2).retry_interval(Duration::from_millis(200))
}

// -- inputs, plans and outputs ----------------------------------------------------------------

/// `update-api-keys`: set the title of these keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateApiKeysInput {
    pub ids: Vec<ApiKeyId>,
    pub title: String,
}

/// `revoke-api-keys`: revoke these keys now, or `revoke_in` seconds from now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeApiKeysInput {
    pub ids: Vec<ApiKeyId>,
    pub revoked_by: String,
    pub revoke_in: Option<i64>,
}

/// `delete-api-keys`: delete these (revoked) keys and their sales-channel links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteApiKeysInput {
    pub ids: Vec<ApiKeyId>,
}

/// `link-sales-channels-to-api-key`: add and remove a publishable key's channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSalesChannelsInput {
    pub id: ApiKeyId,
    #[serde(default)]
    pub add: Vec<SalesChannelId>,
    #[serde(default)]
    pub remove: Vec<SalesChannelId>,
}

/// `roll-api-key`: replace a key; the old one is revoked `revoke_in` seconds from now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollApiKeyInput {
    pub id: ApiKeyId,
    pub rolled_by: String,
    pub revoke_in: Option<i64>,
}

/// What `roll-api-key` returns (the new key's token is handed out beside it, never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledApiKey {
    pub api_key: ApiKey,
    pub previous_api_key: ApiKey,
}

/// The input of the `api_keys_created` hook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeysCreated {
    pub api_keys: Vec<ApiKey>,
}

/// A title change, with the titles to put back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TitlePlan {
    pub ids: Vec<ApiKeyId>,
    pub title: String,
    pub previous: Vec<(ApiKeyId, String)>,
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
}

/// The rows and links a delete removes, to put back if it is undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletePlan {
    pub keys: Vec<StoredKey>,
    pub links: Vec<(ApiKeyId, SalesChannelId)>,
}

/// A link change with the key's channels before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPlan {
    pub id: ApiKeyId,
    pub add: Vec<SalesChannelId>,
    pub remove: Vec<SalesChannelId>,
    pub previous: Vec<SalesChannelId>,
}

/// A sales-channel update with the channel as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelPatchPlan {
    pub before: SalesChannel,
    pub patch: UpdateSalesChannel,
}

/// `update-sales-channels`: a partial update of one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateSalesChannelInput {
    pub id: SalesChannelId,
    pub patch: UpdateSalesChannel,
}

/// The channels a delete removes and their key links, to put back if it is undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelDeletePlan {
    pub channels: Vec<SalesChannel>,
    pub links: Vec<(ApiKeyId, SalesChannelId)>,
}

/// A roll: the new key (id fixed), the channels it inherits, and the old key's revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollPlan {
    pub new_key: CreateApiKey,
    pub channels: Vec<SalesChannelId>,
    pub revoke: RevokePlan,
}

// -- steps ------------------------------------------------------------------------------------

/// `prepare-api-keys`: gives every key to create its id, so the create step can recognise its
/// own work if it is invoked again after a crash.
pub fn prepare_api_keys_step() -> Step<Keyward, Vec<CreateApiKey>, Vec<CreateApiKey>> {
    Step::new("prepare-api-keys", |keys: Vec<CreateApiKey>, cx: Cx| async move {
        Ok(StepResponse::new(
            cx.container().plan_api_keys(keys).map_err(step_error)?,
        ))
    })
    .no_compensation()
}

fn planned_ids(keys: &[CreateApiKey]) -> Vec<ApiKeyId> {
    keys.iter().filter_map(|k| k.id.clone()).collect()
}

/// `create-api-keys`: inserts the planned keys. The plain tokens leave as a private value (never
/// written to the run log). Compensation revokes the keys, then deletes them.
pub fn create_api_keys_step() -> Step<Keyward, Vec<CreateApiKey>, Vec<ApiKey>> {
    retried(Step::new(
        "create-api-keys",
        |planned: Vec<CreateApiKey>, cx: Cx| async move {
            let kw = cx.container();
            let ids = planned_ids(&planned);
            let existing = kw.keys_by_ids(&ids).await.map_err(step_error)?;
            if !ids.is_empty() && existing.len() == ids.len() {
                // Written by an earlier attempt whose record was lost in a crash.
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

/// `load-api-keys`: the keys, all of which must exist (`not_found` names the first missing).
pub fn load_api_keys_step() -> Step<Keyward, Vec<ApiKeyId>, Vec<ApiKey>> {
    Step::new("load-api-keys", |ids: Vec<ApiKeyId>, cx: Cx| async move {
        let keys = cx.container().keys_by_ids(&ids).await.map_err(step_error)?;
        if let Some(missing) = ids.iter().find(|id| !keys.iter().any(|k| &k.id == *id)) {
            return Err(step_error(crate::service::not_found(missing)));
        }
        Ok(StepResponse::new(keys))
    })
    .no_compensation()
}

/// `update-api-keys`: sets the title; compensation puts the old titles back where the keys still
/// hold this run's title.
pub fn update_api_keys_step() -> Step<Keyward, TitlePlan, Vec<ApiKey>> {
    retried(Step::new("update-api-keys", |plan: TitlePlan, cx: Cx| async move {
        let kw = cx.container();
        let updated = kw
            .store()
            .update_api_key_titles(&plan.ids, &plan.title, kw.now())
            .await
            .map_err(step_error)?;
        let keys = kw.keys_by_ids(&plan.ids).await.map_err(step_error)?;
        let undo = title_undo(&plan, Some(&updated));
        Ok(events(
            StepResponse::new(keys).compensate_with(undo),
            EventName::ApiKeyUpdated,
            &plan.ids,
        ))
    }))
    .compensate(|undo: Option<Vec<TitleUndo>>, cx: Cx| async move {
        let undo = match undo {
            Some(u) => u,
            None => title_undo(&cx.input::<TitlePlan>()?, None),
        };
        let kw = cx.container();
        let restored = kw
            .store()
            .restore_api_key_titles(&undo, kw.now())
            .await
            .map_err(step_error)?;
        let left: Vec<&TitleUndo> = undo.iter().filter(|u| !restored.contains(&u.id)).collect();
        let ids: Vec<ApiKeyId> = left.iter().map(|u| u.id.clone()).collect();
        let now = kw.keys_by_ids(&ids).await.map_err(step_error)?;
        for u in left {
            match now.iter().find(|k| k.id == u.id) {
                Some(k) if k.title != u.previous => cx.conflict(format!(
                    "api key {} has the title {:?}, not the {:?} this run wrote; left as it is",
                    u.id, k.title, u.written
                )),
                _ => {}
            }
        }
        Ok(())
    })
}

/// What a title change wrote (the keys `updated` names, or every planned key when unknown).
fn title_undo(plan: &TitlePlan, updated: Option<&[ApiKeyId]>) -> Vec<TitleUndo> {
    plan.previous
        .iter()
        .filter(|(id, _)| updated.is_none_or(|u| u.contains(id)))
        .map(|(id, previous)| TitleUndo {
            id: id.clone(),
            written: plan.title.clone(),
            previous: previous.clone(),
        })
        .collect()
}

/// `prepare-revocation`: checks the revoke rules and fixes the instant.
pub fn prepare_revocation_step() -> Step<Keyward, RevokeApiKeysInput, RevokePlan> {
    Step::new("prepare-revocation", |input: RevokeApiKeysInput, cx: Cx| async move {
        let plan = cx
            .container()
            .plan_revocation(&input.ids, &input.revoked_by, input.revoke_in)
            .await
            .map_err(step_error)?;
        Ok(StepResponse::new(plan))
    })
    .no_compensation()
}

/// `revoke-api-keys`: applies a planned revocation (secret keys once, checked in the writing
/// transaction). Compensation puts the previous revocations back where the keys still hold this
/// run's — but never makes a key valid again once its revocation took effect.
pub fn revoke_api_keys_step() -> Step<Keyward, RevokePlan, Vec<ApiKey>> {
    retried(Step::new("revoke-api-keys", |plan: RevokePlan, cx: Cx| async move {
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
fn revocation_undo(plan: &RevokePlan) -> Vec<RevocationUndo> {
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

/// `prepare-delete`: checks every key is revoked and snapshots the rows and their links.
pub fn prepare_delete_step() -> Step<Keyward, DeleteApiKeysInput, DeletePlan> {
    Step::new("prepare-delete", |input: DeleteApiKeysInput, cx: Cx| async move {
        let plan = cx.container().plan_delete(&input.ids).await.map_err(step_error)?;
        Ok(StepResponse::new(plan))
    })
    .no_compensation()
}

/// `remove-sales-channel-links`: unlinks the keys' channels; compensation links again the ones
/// this run unlinked.
pub fn remove_links_step() -> Step<Keyward, Vec<(ApiKeyId, SalesChannelId)>, ()> {
    retried(Step::new(
        "remove-sales-channel-links",
        |links: Vec<(ApiKeyId, SalesChannelId)>, cx: Cx| async move {
            let kw = cx.container();
            let mut removed: Vec<(ApiKeyId, SalesChannelId)> = Vec::new();
            for (key, channels) in by_key(&links) {
                match kw.store().unlink_sales_channels(&key, &channels, kw.now()).await {
                    Ok(Ok(gone)) => removed.extend(gone.into_iter().map(|c| (key.clone(), c))),
                    // A key already gone has no links left to remove.
                    Ok(Err(_)) => {}
                    Err(e) => {
                        // Undo this attempt's own unlinks before failing, so the failure
                        // leaves nothing behind.
                        return match kw.relink(&removed).await {
                            Ok(_) => Err(step_error(e)),
                            Err(_) => Err(step_error(e).maybe_applied()),
                        };
                    }
                }
            }
            Ok(StepResponse::new(()).compensate_with(removed))
        },
    ))
    .compensate(|removed: Option<Vec<(ApiKeyId, SalesChannelId)>>, cx: Cx| async move {
        let removed = match removed {
            Some(r) => r,
            None => cx.input::<Vec<(ApiKeyId, SalesChannelId)>>()?,
        };
        for conflict in cx.container().relink(&removed).await.map_err(step_error)? {
            cx.conflict(conflict);
        }
        Ok(())
    })
}

/// `delete-api-keys`: deletes the keys (only revoked ones, checked in the writing transaction)
/// and publishes `api_key.deleted` for each it deleted; compensation writes back the rows this
/// run deleted.
pub fn delete_api_keys_step() -> Step<Keyward, Vec<StoredKey>, Vec<ApiKeyId>> {
    retried(Step::new(
        "delete-api-keys",
        |keys: Vec<StoredKey>, cx: Cx| async move {
            let ids: Vec<ApiKeyId> = keys.iter().map(|k| k.key.id.clone()).collect();
            let deleted = cx.container().delete_api_keys(&ids).await.map_err(step_error)?;
            let ours: Vec<StoredKey> = keys.into_iter().filter(|k| deleted.contains(&k.key.id)).collect();
            Ok(events(
                StepResponse::new(deleted.clone()).compensate_with(ours),
                EventName::ApiKeyDeleted,
                &deleted,
            ))
        },
    ))
    .compensate(|keys: Option<Vec<StoredKey>>, cx: Cx| async move {
        let keys = match keys {
            Some(k) => k,
            None => cx.input::<Vec<StoredKey>>()?,
        };
        // Rows that exist are left alone; an id is never reused, so a missing row is ours.
        cx.container().store().restore_api_keys(&keys).await.map_err(step_error)
    })
}

/// `validate-sales-channels-exist`: the key exists, is publishable when channels are added,
/// every added channel exists; records the key's channels before the change.
pub fn validate_link_step() -> Step<Keyward, LinkSalesChannelsInput, LinkPlan> {
    Step::new(
        "validate-sales-channels-exist",
        |input: LinkSalesChannelsInput, cx: Cx| async move {
            let plan = cx
                .container()
                .plan_link(&input.id, &input.add, &input.remove)
                .await
                .map_err(step_error)?;
            Ok(StepResponse::new(plan))
        },
    )
    .no_compensation()
}

/// What a link step changed: the channels it linked and those it unlinked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkUndo {
    pub id: ApiKeyId,
    pub linked: Vec<SalesChannelId>,
    pub unlinked: Vec<SalesChannelId>,
}

/// `link-sales-channels-to-api-key`: adds then removes links; compensation unlinks what this run
/// linked and links again what it unlinked.
pub fn link_sales_channels_step() -> Step<Keyward, LinkPlan, ()> {
    retried(Step::new(
        "link-sales-channels-to-api-key",
        |plan: LinkPlan, cx: Cx| async move {
            let kw = cx.container();
            let linked = if plan.add.is_empty() {
                Vec::new()
            } else {
                kw.add_sales_channels(&plan.id, &plan.add).await.map_err(step_error)?
            };
            let unlinked = if plan.remove.is_empty() {
                Vec::new()
            } else {
                match kw.remove_sales_channels(&plan.id, &plan.remove).await {
                    Ok(unlinked) => unlinked,
                    Err(e) => {
                        // Take back this attempt's links before failing.
                        let undone = kw.remove_sales_channels(&plan.id, &linked).await;
                        return Err(match undone {
                            Ok(_) => step_error(e),
                            Err(u) if u.kind == ErrorKind::NotFound => step_error(e),
                            Err(_) => step_error(e).maybe_applied(),
                        });
                    }
                }
            };
            let undo = LinkUndo {
                id: plan.id.clone(),
                linked,
                unlinked,
            };
            Ok(StepResponse::new(()).compensate_with(undo).event(
                EventName::ApiKeyUpdated,
                serde_json::json!({"id": plan.id, "sales_channels_added": plan.add, "sales_channels_removed": plan.remove}),
            ))
        },
    ))
    .compensate(|undo: Option<LinkUndo>, cx: Cx| async move {
        let undo = match undo {
            Some(u) => u,
            // Cut off mid-way: what it may have done, judged from the plan.
            None => {
                let plan = cx.input::<LinkPlan>()?;
                LinkUndo {
                    linked: plan.add.iter().filter(|c| !plan.previous.contains(c)).cloned().collect(),
                    unlinked: plan.remove.iter().filter(|c| plan.previous.contains(c)).cloned().collect(),
                    id: plan.id,
                }
            }
        };
        let kw = cx.container();
        if !undo.linked.is_empty() {
            match kw.remove_sales_channels(&undo.id, &undo.linked).await {
                // The key itself is gone (a roll's new key, removed by the create step's
                // compensation): so are its links.
                Err(e) if e.kind == ErrorKind::NotFound => {}
                other => {
                    other.map_err(step_error)?;
                }
            }
        }
        let unlinked: Vec<(ApiKeyId, SalesChannelId)> =
            undo.unlinked.iter().map(|c| (undo.id.clone(), c.clone())).collect();
        for conflict in kw.relink(&unlinked).await.map_err(step_error)? {
            cx.conflict(conflict);
        }
        Ok(())
    })
}

/// `prepare-roll`: checks the key can be rolled, fixes the new key's id and the old key's
/// revocation instant, and records the channels the new key inherits.
pub fn prepare_roll_step() -> Step<Keyward, RollApiKeyInput, RollPlan> {
    Step::new("prepare-roll", |input: RollApiKeyInput, cx: Cx| async move {
        let plan = cx
            .container()
            .plan_roll(&input.id, &input.rolled_by, input.revoke_in)
            .await
            .map_err(step_error)?;
        Ok(StepResponse::new(plan))
    })
    .no_compensation()
}

/// One event `name` with data `{id}` per id.
fn events<O, I: Serialize>(mut response: StepResponse<O>, name: EventName, ids: &[I]) -> StepResponse<O> {
    for id in ids {
        response = response.event(name, serde_json::json!({ "id": id }));
    }
    response
}

/// `announce-roll`: publishes `api_key.rolled` `{id, previous_id}` with the run's other events.
pub fn announce_roll_step() -> Step<Keyward, (ApiKeyId, ApiKeyId), ()> {
    Step::new(
        "announce-roll",
        |(id, previous): (ApiKeyId, ApiKeyId), _cx: Cx| async move {
            Ok(StepResponse::new(()).event(
                EventName::ApiKeyRolled,
                serde_json::json!({ "id": id, "previous_id": previous }),
            ))
        },
    )
    .no_compensation()
}

/// `create-user`: writes a prepared user (the password already hashed); `user.created`.
pub fn create_user_step() -> Step<Keyward, crate::users::NewUser, crate::model::User> {
    retried(Step::new(
        "create-user",
        |new: crate::users::NewUser, cx: Cx| async move {
            let user = cx.container().insert_prepared_user(&new).await.map_err(step_error)?;
            let data = serde_json::json!({ "id": user.id, "email": user.email });
            Ok(StepResponse::new(user).event(EventName::UserCreated, data))
        },
    ))
}

fn by_key(links: &[(ApiKeyId, SalesChannelId)]) -> Vec<(ApiKeyId, Vec<SalesChannelId>)> {
    let mut grouped: std::collections::BTreeMap<ApiKeyId, Vec<SalesChannelId>> = Default::default();
    for (k, c) in links {
        grouped.entry(k.clone()).or_default().push(c.clone());
    }
    grouped.into_iter().collect()
}

/// `prepare-sales-channels`: gives every channel to create its id.
pub fn prepare_sales_channels_step() -> Step<Keyward, Vec<CreateSalesChannel>, Vec<CreateSalesChannel>> {
    Step::new(
        "prepare-sales-channels",
        |channels: Vec<CreateSalesChannel>, cx: Cx| async move {
            Ok(StepResponse::new(
                cx.container().plan_sales_channels(channels).map_err(step_error)?,
            ))
        },
    )
    .no_compensation()
}

fn planned_channel_ids(channels: &[CreateSalesChannel]) -> Vec<SalesChannelId> {
    channels.iter().filter_map(|c| c.id.clone()).collect()
}

/// `create-sales-channels`: inserts the planned channels; compensation deletes them.
pub fn create_sales_channels_step() -> Step<Keyward, Vec<CreateSalesChannel>, Vec<SalesChannel>> {
    retried(Step::new(
        "create-sales-channels",
        |planned: Vec<CreateSalesChannel>, cx: Cx| async move {
            let kw = cx.container();
            let ids = planned_channel_ids(&planned);
            let existing = kw.channels_by_ids(&ids).await.map_err(step_error)?;
            if !ids.is_empty() && existing.len() == ids.len() {
                return Ok(events(
                    StepResponse::new(existing).compensate_with(&ids),
                    EventName::SalesChannelCreated,
                    &ids,
                ));
            }
            let created = kw.create_sales_channels(planned).await.map_err(step_error)?;
            Ok(events(
                StepResponse::new(created).compensate_with(&ids),
                EventName::SalesChannelCreated,
                &ids,
            ))
        },
    ))
    .compensate(|ids: Option<Vec<SalesChannelId>>, cx: Cx| async move {
        let ids = match ids {
            Some(ids) => ids,
            None => planned_channel_ids(&cx.input::<Vec<CreateSalesChannel>>()?),
        };
        cx.container()
            .delete_sales_channels(&ids)
            .await
            .map(|_| ())
            .map_err(step_error)
    })
}

/// `load-sales-channel`: the channel before the change (`not_found` when missing).
pub fn load_sales_channel_step() -> Step<Keyward, SalesChannelId, SalesChannel> {
    Step::new("load-sales-channel", |id: SalesChannelId, cx: Cx| async move {
        Ok(StepResponse::new(
            cx.container().retrieve_sales_channel(&id).await.map_err(step_error)?,
        ))
    })
    .no_compensation()
}

/// `update-sales-channels`: applies the patch; compensation writes the old values back where the
/// channel still holds this run's.
pub fn update_sales_channel_step() -> Step<Keyward, ChannelPatchPlan, SalesChannel> {
    retried(Step::new(
        "update-sales-channels",
        |plan: ChannelPatchPlan, cx: Cx| async move {
            let updated = cx
                .container()
                .update_sales_channel(&plan.before.id, &plan.patch)
                .await
                .map_err(step_error)?;
            let id = plan.before.id.clone();
            Ok(StepResponse::new(updated.clone())
                .compensate_with((updated, plan.before))
                .event(EventName::SalesChannelUpdated, serde_json::json!({ "id": id })))
        },
    ))
    .compensate(|undo: Option<(SalesChannel, SalesChannel)>, cx: Cx| async move {
        // Cut off mid-way, the step's write is not known: the channel is left as it is.
        let Some((written, before)) = undo else {
            cx.conflict(format!(
                "sales channel {}: the update's outcome is unknown; left as it is",
                cx.input::<ChannelPatchPlan>()?.before.id
            ));
            return Ok(());
        };
        let kw = cx.container();
        if kw
            .store()
            .restore_sales_channel(&written, &before)
            .await
            .map_err(step_error)?
        {
            return Ok(());
        }
        let now = kw
            .channels_by_ids(std::slice::from_ref(&before.id))
            .await
            .map_err(step_error)?;
        match now.first() {
            Some(c)
                if (&c.name, &c.description, c.is_disabled)
                    == (&before.name, &before.description, before.is_disabled) => {}
            Some(_) => cx.conflict(format!(
                "sales channel {} changed after this run updated it; left as it is",
                before.id
            )),
            None => cx.conflict(format!(
                "sales channel {} was deleted after this run updated it",
                before.id
            )),
        }
        Ok(())
    })
}

/// `prepare-sales-channel-delete`: snapshots the channels and their key links.
pub fn prepare_channel_delete_step() -> Step<Keyward, Vec<SalesChannelId>, ChannelDeletePlan> {
    Step::new(
        "prepare-sales-channel-delete",
        |ids: Vec<SalesChannelId>, cx: Cx| async move {
            let kw = cx.container();
            let channels = kw.channels_by_ids(&ids).await.map_err(step_error)?;
            let found: Vec<SalesChannelId> = channels.iter().map(|c| c.id.clone()).collect();
            let links = if found.is_empty() {
                Vec::new()
            } else {
                kw.store()
                    .links_of_sales_channels(&found)
                    .await
                    .map_err(step_error)?
                    .into_iter()
                    .map(|(c, k)| (k, c))
                    .collect()
            };
            Ok(StepResponse::new(ChannelDeletePlan { channels, links }))
        },
    )
    .no_compensation()
}

/// `delete-sales-channels`: deletes the channels and their links; compensation puts back the
/// channels this run deleted and their links.
pub fn delete_sales_channels_step() -> Step<Keyward, ChannelDeletePlan, Vec<SalesChannelId>> {
    retried(Step::new(
        "delete-sales-channels",
        |plan: ChannelDeletePlan, cx: Cx| async move {
            let ids: Vec<SalesChannelId> = plan.channels.iter().map(|c| c.id.clone()).collect();
            let deleted = cx.container().delete_sales_channels(&ids).await.map_err(step_error)?;
            let ours = ChannelDeletePlan {
                channels: plan.channels.into_iter().filter(|c| deleted.contains(&c.id)).collect(),
                links: plan.links.into_iter().filter(|(_, c)| deleted.contains(c)).collect(),
            };
            let response = StepResponse::new(deleted.clone()).compensate_with(ours);
            Ok(events(response, EventName::SalesChannelDeleted, &deleted))
        },
    ))
    .compensate(|plan: Option<ChannelDeletePlan>, cx: Cx| async move {
        let plan = match plan {
            Some(p) => p,
            None => cx.input::<ChannelDeletePlan>()?,
        };
        let kw = cx.container();
        let ids: Vec<SalesChannelId> = plan.channels.iter().map(|c| c.id.clone()).collect();
        let present = kw.channels_by_ids(&ids).await.map_err(step_error)?;
        let missing: Vec<SalesChannel> = plan
            .channels
            .into_iter()
            .filter(|c| !present.iter().any(|p| p.id == c.id))
            .collect();
        if !missing.is_empty() {
            kw.store().insert_sales_channels(&missing).await.map_err(step_error)?;
        }
        for conflict in kw.relink(&plan.links).await.map_err(step_error)? {
            cx.conflict(conflict);
        }
        Ok(())
    })
}

// -- workflows ----------------------------------------------------------------------------------

/// `create-api-keys`: prepare, create, then the `api_keys_created` hook.
pub fn create_api_keys_workflow() -> Workflow<Keyward, Vec<CreateApiKey>, Vec<ApiKey>> {
    let (prepare, create) = (prepare_api_keys_step(), create_api_keys_step());
    let created = create.clone();
    Workflow::<Keyward, Vec<CreateApiKey>, Vec<ApiKey>>::new(CREATE_API_KEYS)
        // Runs are automatic ids unless a caller names one (a subscriber, an idempotency key):
        // then a second run with that id returns the first one's result.
        .idempotent(true)
        .step(&prepare, |d| d.input())
        .step(&create, move |d| d.output(&prepare))
        .hook(API_KEYS_CREATED, {
            let create = create.clone();
            move |d| {
                Ok(ApiKeysCreated {
                    api_keys: d.output(&create)?,
                })
            }
        })
        .returns(move |d| d.output(&created))
}

/// `update-api-keys`: load (404 for a missing key), then set the title.
pub fn update_api_keys_workflow() -> Workflow<Keyward, UpdateApiKeysInput, Vec<ApiKey>> {
    let (load, update) = (load_api_keys_step(), update_api_keys_step());
    let updated = update.clone();
    Workflow::<Keyward, UpdateApiKeysInput, Vec<ApiKey>>::new(UPDATE_API_KEYS)
        .step(&load, |d| Ok(d.input()?.ids))
        .step(&update, move |d| {
            let input = d.input()?;
            let previous = d.output(&load)?.into_iter().map(|k| (k.id, k.title)).collect();
            Ok(TitlePlan {
                ids: input.ids,
                title: input.title,
                previous,
            })
        })
        .returns(move |d| d.output(&updated))
}

/// `revoke-api-keys`: prepare (rules, instant), then revoke.
pub fn revoke_api_keys_workflow() -> Workflow<Keyward, RevokeApiKeysInput, Vec<ApiKey>> {
    let (prepare, revoke) = (prepare_revocation_step(), revoke_api_keys_step());
    let revoked = revoke.clone();
    Workflow::<Keyward, RevokeApiKeysInput, Vec<ApiKey>>::new(REVOKE_API_KEYS)
        .step(&prepare, |d| d.input())
        .step(&revoke, move |d| d.output(&prepare))
        .returns(move |d| d.output(&revoked))
}

/// `delete-api-keys`: snapshot, remove the links, delete the keys.
pub fn delete_api_keys_workflow() -> Workflow<Keyward, DeleteApiKeysInput, Vec<ApiKeyId>> {
    let (prepare, unlink, delete) = (prepare_delete_step(), remove_links_step(), delete_api_keys_step());
    let (links_of, keys_of, deleted) = (prepare.clone(), prepare.clone(), delete.clone());
    Workflow::<Keyward, DeleteApiKeysInput, Vec<ApiKeyId>>::new(DELETE_API_KEYS)
        .step(&prepare, |d| d.input())
        .step(&unlink, move |d| Ok(d.output(&links_of)?.links))
        .step(&delete, move |d| Ok(d.output(&keys_of)?.keys))
        .returns(move |d| d.output(&deleted))
}

/// `link-sales-channels-to-api-key`: validate, then link and unlink.
pub fn link_sales_channels_workflow() -> Workflow<Keyward, LinkSalesChannelsInput, ()> {
    let (validate, link) = (validate_link_step(), link_sales_channels_step());
    Workflow::<Keyward, LinkSalesChannelsInput, ()>::new(LINK_SALES_CHANNELS_TO_API_KEY)
        .step(&validate, |d| d.input())
        .step(&link, move |d| d.output(&validate))
}

/// `roll-api-key`: prepare, create the new key, give it the old key's channels, revoke the old
/// key with the grace period. Both keys change or neither does.
pub fn roll_api_key_workflow() -> Workflow<Keyward, RollApiKeyInput, RolledApiKey> {
    let (prepare, create, link, revoke) = (
        prepare_roll_step(),
        create_api_keys_step(),
        link_sales_channels_step(),
        revoke_api_keys_step(),
    );
    let (p1, p2, p3, p4, p5) = (
        prepare.clone(),
        prepare.clone(),
        prepare.clone(),
        prepare.clone(),
        prepare,
    );
    let (c1, r1) = (create.clone(), revoke.clone());
    Workflow::<Keyward, RollApiKeyInput, RolledApiKey>::new(ROLL_API_KEY)
        .step(&p1, |d| d.input())
        .step(&create, move |d| Ok(vec![d.output(&p2)?.new_key]))
        .when(
            {
                let p = p3.clone();
                move |d| Ok(!d.output(&p)?.channels.is_empty())
            },
            &link,
            move |d| {
                let plan = d.output(&p3)?;
                Ok(LinkPlan {
                    id: plan
                        .new_key
                        .id
                        .clone()
                        .ok_or_else(|| StepError::permanent("the roll plan has no key id"))?,
                    add: plan.channels,
                    remove: Vec::new(),
                    previous: Vec::new(),
                })
            },
        )
        .step(&revoke, move |d| Ok(d.output(&p4)?.revoke))
        .step(&announce_roll_step(), move |d| {
            let plan = d.output(&p5)?;
            let id = plan
                .new_key
                .id
                .ok_or_else(|| StepError::permanent("the roll plan has no key id"))?;
            Ok((
                id,
                plan.revoke
                    .ids
                    .into_iter()
                    .next()
                    .ok_or_else(|| StepError::permanent("the roll plan has no old key"))?,
            ))
        })
        .returns(move |d| {
            let api_key = d.output(&c1)?.into_iter().next();
            let previous_api_key = d.output(&r1)?.into_iter().next();
            match (api_key, previous_api_key) {
                (Some(api_key), Some(previous_api_key)) => Ok(RolledApiKey {
                    api_key,
                    previous_api_key,
                }),
                _ => Err(StepError::permanent("the roll produced no key")),
            }
        })
}

/// `create-sales-channels`: prepare ids, create.
pub fn create_sales_channels_workflow() -> Workflow<Keyward, Vec<CreateSalesChannel>, Vec<SalesChannel>> {
    let (prepare, create) = (prepare_sales_channels_step(), create_sales_channels_step());
    let created = create.clone();
    Workflow::<Keyward, Vec<CreateSalesChannel>, Vec<SalesChannel>>::new(CREATE_SALES_CHANNELS)
        .step(&prepare, |d| d.input())
        .step(&create, move |d| d.output(&prepare))
        .returns(move |d| d.output(&created))
}

/// `update-sales-channels`: load (404), then apply the patch.
pub fn update_sales_channels_workflow() -> Workflow<Keyward, UpdateSalesChannelInput, SalesChannel> {
    let (load, update) = (load_sales_channel_step(), update_sales_channel_step());
    let updated = update.clone();
    Workflow::<Keyward, UpdateSalesChannelInput, SalesChannel>::new(UPDATE_SALES_CHANNELS)
        .step(&load, |d| Ok(d.input()?.id))
        .step(&update, move |d| {
            Ok(ChannelPatchPlan {
                before: d.output(&load)?,
                patch: d.input()?.patch,
            })
        })
        .returns(move |d| d.output(&updated))
}

/// `delete-sales-channels`: snapshot, then delete channels and links.
pub fn delete_sales_channels_workflow() -> Workflow<Keyward, Vec<SalesChannelId>, Vec<SalesChannelId>> {
    let (prepare, delete) = (prepare_channel_delete_step(), delete_sales_channels_step());
    let deleted = delete.clone();
    Workflow::<Keyward, Vec<SalesChannelId>, Vec<SalesChannelId>>::new(DELETE_SALES_CHANNELS)
        .step(&prepare, |d| d.input())
        .step(&delete, move |d| d.output(&prepare))
        .returns(move |d| d.output(&deleted))
}

/// `create-users`: writes a prepared admin user.
pub fn create_users_workflow() -> Workflow<Keyward, crate::users::NewUser, crate::model::User> {
    let create = create_user_step();
    let created = create.clone();
    Workflow::<Keyward, crate::users::NewUser, crate::model::User>::new(CREATE_USERS)
        .step(&create, |d| d.input())
        .returns(move |d| d.output(&created))
}

// -- the façade ---------------------------------------------------------------------------------

/// The module with its workflows: what the server and the CLI call for every change.
#[derive(Clone)]
pub struct Workflows {
    engine: Engine<Keyward>,
    create: WorkflowHandle<Vec<CreateApiKey>, Vec<ApiKey>>,
    update: WorkflowHandle<UpdateApiKeysInput, Vec<ApiKey>>,
    revoke: WorkflowHandle<RevokeApiKeysInput, Vec<ApiKey>>,
    delete: WorkflowHandle<DeleteApiKeysInput, Vec<ApiKeyId>>,
    link: WorkflowHandle<LinkSalesChannelsInput, ()>,
    roll: WorkflowHandle<RollApiKeyInput, RolledApiKey>,
    create_channels: WorkflowHandle<Vec<CreateSalesChannel>, Vec<SalesChannel>>,
    update_channel: WorkflowHandle<UpdateSalesChannelInput, SalesChannel>,
    delete_channels: WorkflowHandle<Vec<SalesChannelId>, Vec<SalesChannelId>>,
    create_user: WorkflowHandle<crate::users::NewUser, crate::model::User>,
    import: WorkflowHandle<crate::import::ImportInput, crate::import::ImportReport>,
}

impl std::fmt::Debug for Workflows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflows")
            .field("node", &self.engine.node_id())
            .finish_non_exhaustive()
    }
}

impl Workflows {
    /// The workflows over `kw`, logging runs to `log`, holding runs for `lease`.
    pub fn new(kw: Keyward, log: Arc<dyn RunLog>, lease: Duration) -> Result<Self> {
        Self::on(Engine::new(kw, log).with_lease(lease))
    }

    /// Registers the api-key workflows on `engine` (which may hold the application's own).
    pub fn on(engine: Engine<Keyward>) -> Result<Self> {
        let reg = |e: FlowError| Error::unexpected(format!("registering the api-key workflows: {e}"));
        Ok(Self {
            create: engine.register(create_api_keys_workflow()).map_err(reg)?,
            update: engine.register(update_api_keys_workflow()).map_err(reg)?,
            revoke: engine.register(revoke_api_keys_workflow()).map_err(reg)?,
            delete: engine.register(delete_api_keys_workflow()).map_err(reg)?,
            link: engine.register(link_sales_channels_workflow()).map_err(reg)?,
            roll: engine.register(roll_api_key_workflow()).map_err(reg)?,
            create_channels: engine.register(create_sales_channels_workflow()).map_err(reg)?,
            update_channel: engine.register(update_sales_channels_workflow()).map_err(reg)?,
            delete_channels: engine.register(delete_sales_channels_workflow()).map_err(reg)?,
            create_user: engine.register(create_users_workflow()).map_err(reg)?,
            import: engine.register(crate::import::import_medusa_workflow()).map_err(reg)?,
            engine,
        })
    }

    /// The handle of `create-api-keys` (to run it with options of your own).
    pub fn create_handle(&self) -> &WorkflowHandle<Vec<CreateApiKey>, Vec<ApiKey>> {
        &self.create
    }

    /// The engine, to register more workflows, attach hooks, or recover runs.
    pub fn engine(&self) -> &Engine<Keyward> {
        &self.engine
    }

    /// The module itself, for reads.
    pub fn kw(&self) -> &Keyward {
        self.engine.container()
    }

    /// Migrates the store (and seeds it) and the run log.
    pub async fn migrate(&self) -> Result<()> {
        self.kw().migrate().await?;
        self.engine.migrate().await.map_err(from_flow)
    }

    /// Creates keys; the plain tokens are in this answer and nowhere else.
    pub async fn create_api_keys(&self, input: Vec<CreateApiKey>) -> Result<Vec<CreatedApiKey>> {
        if input.is_empty() {
            return Ok(Vec::new());
        }
        let run = self
            .engine
            .run(&self.create, input, RunOptions::default())
            .await
            .map_err(from_flow)?;
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

    pub async fn create_api_key(&self, input: CreateApiKey) -> Result<CreatedApiKey> {
        self.create_api_keys(vec![input])
            .await?
            .pop()
            .ok_or_else(|| Error::unexpected("create returned no key"))
    }

    /// Sets the title of one key (`not_found` when it does not exist).
    pub async fn update_api_key(&self, id: &ApiKeyId, title: &str) -> Result<ApiKey> {
        let input = UpdateApiKeysInput {
            ids: vec![id.clone()],
            title: title.to_owned(),
        };
        self.one(self.engine.run(&self.update, input, RunOptions::default()).await, id)
    }

    /// Revokes one key now or after `revoke_in` seconds.
    pub async fn revoke_api_key(&self, id: &ApiKeyId, data: &RevokeApiKey) -> Result<ApiKey> {
        let input = RevokeApiKeysInput {
            ids: vec![id.clone()],
            revoked_by: data.revoked_by.clone(),
            revoke_in: data.revoke_in,
        };
        self.one(self.engine.run(&self.revoke, input, RunOptions::default()).await, id)
    }

    /// Deletes revoked keys and their links; unknown ids are ignored.
    pub async fn delete_api_keys(&self, ids: &[ApiKeyId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let input = DeleteApiKeysInput { ids: ids.to_vec() };
        self.engine
            .run(&self.delete, input, RunOptions::default())
            .await
            .map_err(from_flow)?;
        Ok(())
    }

    /// Adds and removes a publishable key's sales channels.
    pub async fn link_sales_channels(
        &self,
        id: &ApiKeyId,
        add: &[SalesChannelId],
        remove: &[SalesChannelId],
    ) -> Result<()> {
        let input = LinkSalesChannelsInput {
            id: id.clone(),
            add: add.to_vec(),
            remove: remove.to_vec(),
        };
        self.engine
            .run(&self.link, input, RunOptions::default())
            .await
            .map_err(from_flow)?;
        Ok(())
    }

    /// Replaces a key: a new key with its title, type and channels, and the old key revoked
    /// `grace_seconds` from now (at once when `None` or `<= 0`). Returns the new key with its
    /// plain token and the old key as revoked.
    pub async fn roll_api_key(
        &self,
        id: &ApiKeyId,
        rolled_by: &str,
        grace_seconds: Option<i64>,
    ) -> Result<(CreatedApiKey, ApiKey)> {
        let input = RollApiKeyInput {
            id: id.clone(),
            rolled_by: rolled_by.to_owned(),
            revoke_in: grace_seconds,
        };
        let run = self
            .engine
            .run(&self.roll, input, RunOptions::default())
            .await
            .map_err(from_flow)?;
        let token = run
            .private::<Vec<PlainToken>>("create-api-keys")
            .and_then(|t| t.into_iter().next())
            .ok_or_else(|| Error::unexpected("the new key's token did not come back from the create step"))?;
        let rolled = run
            .result
            .ok_or_else(|| Error::unexpected("the roll finished without a result"))?;
        Ok((
            CreatedApiKey {
                key: rolled.api_key,
                token,
            },
            rolled.previous_api_key,
        ))
    }

    /// Imports a checked Medusa snapshot as one `import-medusa` run named `transaction_id`
    /// (watch it with [`Keyward::import_progress`] for a progress bar): all of it or none.
    pub async fn import_medusa(
        &self,
        input: crate::import::ImportInput,
        transaction_id: &str,
    ) -> Result<crate::import::ImportReport> {
        self.engine
            .run(
                &self.import,
                input,
                RunOptions::default().transaction_id(transaction_id),
            )
            .await
            .map_err(from_flow)?
            .result
            .ok_or_else(|| Error::unexpected("the import finished without a report"))
    }

    /// Creates an admin user (the password is hashed before anything is recorded).
    pub async fn create_user(&self, email: &str, password: &str) -> Result<crate::model::User> {
        let new = self.kw().prepare_user(email, password).await?;
        self.engine
            .run(&self.create_user, new, RunOptions::default())
            .await
            .map_err(from_flow)?
            .result
            .ok_or_else(|| Error::unexpected("create returned no user"))
    }

    /// Creates a sales channel.
    pub async fn create_sales_channel(&self, input: CreateSalesChannel) -> Result<SalesChannel> {
        if input.name.trim().is_empty() {
            return Err(Error::invalid_data("A sales channel needs a name"));
        }
        self.engine
            .run(&self.create_channels, vec![input], RunOptions::default())
            .await
            .map_err(from_flow)?
            .result
            .and_then(|mut c| c.pop())
            .ok_or_else(|| Error::unexpected("create returned no sales channel"))
    }

    /// Applies a partial update to a sales channel (`not_found` when missing).
    pub async fn update_sales_channel(&self, id: &SalesChannelId, patch: &UpdateSalesChannel) -> Result<SalesChannel> {
        if patch.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(Error::invalid_data("A sales channel needs a name"));
        }
        let input = UpdateSalesChannelInput {
            id: id.clone(),
            patch: patch.clone(),
        };
        self.engine
            .run(&self.update_channel, input, RunOptions::default())
            .await
            .map_err(from_flow)?
            .result
            .ok_or_else(|| Error::unexpected("update returned no sales channel"))
    }

    /// Deletes sales channels and their links to keys; unknown ids are ignored.
    pub async fn delete_sales_channels(&self, ids: &[SalesChannelId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.engine
            .run(&self.delete_channels, ids.to_vec(), RunOptions::default())
            .await
            .map_err(from_flow)?;
        Ok(())
    }

    fn one(
        &self,
        run: std::result::Result<keyward_flow::RunResult<Vec<ApiKey>>, FlowError>,
        id: &ApiKeyId,
    ) -> Result<ApiKey> {
        run.map_err(from_flow)?
            .result
            .and_then(|keys| keys.into_iter().find(|k| &k.id == id))
            .ok_or_else(|| crate::service::not_found(id))
    }
}

// -- what the steps ask of the module -----------------------------------------------------------

impl Keyward {
    /// Gives each key to create an id (keeping ids already given).
    pub fn plan_api_keys(&self, keys: Vec<CreateApiKey>) -> Result<Vec<CreateApiKey>> {
        let now = self.now();
        keys.into_iter()
            .map(|mut k| {
                if k.id.is_none() {
                    k.id = Some(
                        ApiKeyId::generate(self.ids(), now, self.entropy.as_ref())
                            .map_err(|e| Error::unexpected(e.to_string()))?,
                    );
                }
                Ok(k)
            })
            .collect()
    }

    /// Gives each channel to create its id (keeping ids already given).
    pub fn plan_sales_channels(&self, channels: Vec<CreateSalesChannel>) -> Result<Vec<CreateSalesChannel>> {
        let now = self.now();
        channels
            .into_iter()
            .map(|mut c| {
                if c.id.is_none() {
                    c.id = Some(
                        SalesChannelId::generate(self.ids(), now, self.entropy.as_ref())
                            .map_err(|e| Error::unexpected(e.to_string()))?,
                    );
                }
                Ok(c)
            })
            .collect()
    }

    /// The channels with these ids that exist.
    pub async fn channels_by_ids(&self, ids: &[SalesChannelId]) -> Result<Vec<SalesChannel>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let filter = SalesChannelFilter::new().try_in(SalesChannelField::Id, ids.iter().map(|c| c.as_str()))?;
        self.list_sales_channels(&filter, &ListOptions::default()).await
    }

    /// The keys with these ids that exist, in id order.
    pub async fn keys_by_ids(&self, ids: &[ApiKeyId]) -> Result<Vec<ApiKey>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.list_api_keys(&ApiKeyFilter::ids(ids), &ListOptions::default())
            .await
    }

    /// Removes keys whatever their state, the module's way: revoke what is not revoked, then
    /// delete. Compensation of create.
    pub async fn discard_api_keys(&self, ids: &[ApiKeyId]) -> Result<()> {
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
                .revoke_api_keys(&live, DISCARDED_BY, now, self.clock.as_ref(), RevokeOnce::Secret, None)
                .await?;
        }
        self.delete_api_keys(ids).await.map(|_| ())
    }

    /// Puts revocations back where the keys still hold what this run wrote, and reports what
    /// it left alone. A revocation that has taken effect is never undone (revocation is
    /// monotonic), unless the key was already revoked before this run; the store judges that
    /// inside its transaction.
    pub async fn undo_revocations(&self, undo: &[RevocationUndo]) -> Result<Vec<String>> {
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

    /// Links again `(key, channel)` pairs a compensation puts back, skipping (and reporting)
    /// keys and channels that no longer exist.
    pub async fn relink(&self, links: &[(ApiKeyId, SalesChannelId)]) -> Result<Vec<String>> {
        let mut conflicts = Vec::new();
        for (key, mut channels) in by_key(links) {
            while !channels.is_empty() {
                match self.store.link_sales_channels(&key, &channels, self.now()).await? {
                    Ok(_) => break,
                    Err(Blocked::UnknownSalesChannels(gone)) => {
                        for c in &gone {
                            conflicts.push(format!(
                                "sales channel {c} is gone; its link to api key {key} stays removed"
                            ));
                        }
                        channels.retain(|c| !gone.contains(c));
                    }
                    Err(_) => {
                        conflicts.push(format!(
                            "api key {key} is gone or no longer publishable; its sales-channel links stay removed"
                        ));
                        break;
                    }
                }
            }
        }
        Ok(conflicts)
    }

    /// Checks a revocation (every key exists, a revoker is named, no secret key is revoked
    /// twice) and fixes its instant.
    pub async fn plan_revocation(
        &self,
        ids: &[ApiKeyId],
        revoked_by: &str,
        revoke_in: Option<i64>,
    ) -> Result<RevokePlan> {
        let keys = self.keys_by_ids(ids).await?;
        if let Some(missing) = ids.iter().find(|id| !keys.iter().any(|k| &k.id == *id)) {
            return Err(crate::service::not_found(missing));
        }
        if revoked_by.is_empty() {
            return Err(Error::invalid_data(crate::service::REVOKED_BY_REQUIRED));
        }
        let now = self.now();
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
            revoked_at: match revoke_in {
                Some(seconds) if seconds > 0 => now.plus_seconds(seconds),
                _ => now,
            },
            previous: keys.iter().map(Revocation::of).collect(),
            once: RevokeOnce::Secret,
            unchanged: None,
        })
    }

    /// Applies a planned revocation. When `may_repeat` (the step runs again after a crash or a
    /// failed attempt) and the keys already carry exactly this revocation, the earlier attempt
    /// got through and that counts as done. On a first attempt an equal revocation was another
    /// run's, and the guarded write decides.
    pub async fn apply_revocation(&self, plan: &RevokePlan, may_repeat: bool) -> Result<Vec<ApiKey>> {
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

    /// Checks every key to delete is revoked (the exact message lists those that are not) and
    /// snapshots their rows and links. Unknown ids are ignored.
    pub async fn plan_delete(&self, ids: &[ApiKeyId]) -> Result<DeletePlan> {
        let keys = self.store.stored_api_keys(ids).await?;
        let now = self.now();
        let unrevoked: Vec<&str> = ids
            .iter()
            .filter(|id| keys.iter().any(|k| &k.key.id == *id && !k.key.is_revoked_at(now)))
            .map(ApiKeyId::as_str)
            .collect();
        if !unrevoked.is_empty() {
            return Err(Error::not_allowed(format!(
                "Cannot delete api keys that are not revoked - {}",
                unrevoked.join(", ")
            )));
        }
        let found: Vec<ApiKeyId> = keys.iter().map(|k| k.key.id.clone()).collect();
        let links = if found.is_empty() {
            Vec::new()
        } else {
            self.store.links_of_keys(&found).await?
        };
        Ok(DeletePlan { keys, links })
    }

    /// Checks a link change the way the writing transaction will, and records the key's
    /// channels before it.
    pub async fn plan_link(
        &self,
        id: &ApiKeyId,
        add: &[SalesChannelId],
        remove: &[SalesChannelId],
    ) -> Result<LinkPlan> {
        let key = self.retrieve_api_key(id).await?;
        if !add.is_empty() {
            if key.key_type != ApiKeyType::Publishable {
                return Err(Error::invalid_data(
                    "Sales channels can only be associated with publishable API keys",
                ));
            }
            self.check_sales_channels_exist(add).await?;
        }
        let previous = self
            .store
            .links_of_keys(std::slice::from_ref(id))
            .await?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        Ok(LinkPlan {
            id: id.clone(),
            add: crate::service::dedup(add),
            remove: crate::service::dedup(remove),
            previous,
        })
    }

    /// Checks a key can be rolled and fixes the new key's id and the old key's revocation.
    pub async fn plan_roll(&self, id: &ApiKeyId, rolled_by: &str, grace_seconds: Option<i64>) -> Result<RollPlan> {
        let old = self.retrieve_api_key(id).await?;
        // A revoked key stays revoked: rolling it would hand out a working successor.
        if old.is_revoked_at(self.now()) {
            return Err(crate::service::already_revoked_of(old.key_type, 1));
        }
        if rolled_by.is_empty() {
            return Err(Error::invalid_data(crate::service::REVOKED_BY_REQUIRED));
        }
        let channels: Vec<SalesChannelId> = self
            .store
            .links_of_keys(std::slice::from_ref(id))
            .await?
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        let new_key = self
            .plan_api_keys(vec![CreateApiKey::new(old.title.clone(), old.key_type, rolled_by)])?
            .pop()
            .ok_or_else(|| Error::unexpected("planning the new key gave nothing"))?;
        let mut revoke = self
            .plan_revocation(std::slice::from_ref(id), rolled_by, grace_seconds)
            .await?;
        // Checked again where the old key is revoked: of two rolls that race, one replaces it,
        // and a rename or link change that came after this plan refuses the roll.
        revoke.once = RevokeOnce::Any;
        revoke.unchanged = Some(KeyShape {
            title: old.title.clone(),
            channels: {
                let mut c: Vec<SalesChannelId> = channels.clone();
                c.sort();
                c
            },
        });
        Ok(RollPlan {
            new_key,
            channels,
            revoke,
        })
    }
}
