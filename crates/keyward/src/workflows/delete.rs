//! `delete-api-keys`: only revoked keys; their rows and links are snapshot so a failed delete
//! puts them back.

use keyward_flow::{Output, Step, StepResponse, Workflow};
use serde::{Deserialize, Serialize};

use crate::actor::Actor;
use crate::error::{Error, Result};
use crate::events::EventName;
use crate::id::{ApiKeyId, SalesChannelId};
use crate::policy::Permission;
use crate::service::Keyward;
use crate::store::StoredKey;

use super::{Cx, DELETE_API_KEYS, Workflows, by_key, events, retried, step_error};

/// `delete-api-keys`: delete these (revoked) keys and their sales-channel links.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteApiKeysInput {
    pub ids: Vec<ApiKeyId>,
    /// Who deletes (the system in runs recorded before actors were).
    #[serde(default)]
    pub actor: Actor,
}

/// The rows and links a delete removes, to put back if it is undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletePlan {
    pub keys: Vec<StoredKey>,
    pub links: Vec<(ApiKeyId, SalesChannelId)>,
}

/// The delete's snapshot, as the later steps read it.
const DELETE_PLAN: Output<DeletePlan> = Output::named("prepare-delete");
/// The ids `delete-api-keys` deleted.
const DELETED_KEYS: Output<Vec<ApiKeyId>> = Output::named("delete-api-keys");

/// `prepare-delete`: checks every key is revoked and snapshots the rows and their links.
pub fn prepare_delete_step() -> Step<Keyward, DeleteApiKeysInput, DeletePlan> {
    Step::named(DELETE_PLAN, |input: DeleteApiKeysInput, cx: Cx| async move {
        let plan = cx
            .container()
            .plan_delete(&input.actor, &input.ids)
            .await
            .map_err(step_error)?;
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
    retried(Step::named(DELETED_KEYS, |keys: Vec<StoredKey>, cx: Cx| async move {
        let ids: Vec<ApiKeyId> = keys.iter().map(|k| k.key.id.clone()).collect();
        let deleted = cx.container().delete_api_keys(&ids).await.map_err(step_error)?;
        let ours: Vec<StoredKey> = keys.into_iter().filter(|k| deleted.contains(&k.key.id)).collect();
        Ok(events(
            StepResponse::new(deleted.clone()).compensate_with(ours),
            EventName::ApiKeyDeleted,
            &deleted,
        ))
    }))
    .compensate(|keys: Option<Vec<StoredKey>>, cx: Cx| async move {
        let keys = match keys {
            Some(k) => k,
            None => cx.input::<Vec<StoredKey>>()?,
        };
        // Rows that exist are left alone; an id is never reused, so a missing row is ours.
        cx.container().store().restore_api_keys(&keys).await.map_err(step_error)
    })
}

/// `delete-api-keys`: snapshot, remove the links, delete the keys.
pub fn delete_api_keys_workflow() -> Workflow<Keyward, DeleteApiKeysInput, Vec<ApiKeyId>> {
    Workflow::<Keyward, DeleteApiKeysInput, Vec<ApiKeyId>>::new(DELETE_API_KEYS)
        .step(&prepare_delete_step(), |d| d.input())
        .step(&remove_links_step(), |d| Ok(d.output(DELETE_PLAN)?.links))
        .step(&delete_api_keys_step(), |d| Ok(d.output(DELETE_PLAN)?.keys))
        .returns(|d| d.output(DELETED_KEYS))
}

impl Workflows {
    /// Deletes revoked keys and their links; unknown ids are ignored.
    pub async fn delete_api_keys(&self, actor: &Actor, ids: &[ApiKeyId]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let input = DeleteApiKeysInput {
            ids: ids.to_vec(),
            actor: actor.clone(),
        };
        self.run(&self.delete, input).await?;
        Ok(())
    }
}

impl Keyward {
    /// Checks every key to delete is revoked (the exact message lists those that are not) and
    /// snapshots their rows and links. Unknown ids are ignored.
    pub(crate) async fn plan_delete(&self, actor: &Actor, ids: &[ApiKeyId]) -> Result<DeletePlan> {
        actor.require(Permission::ApiKeysWrite)?;
        let keys = self.store.stored_api_keys(ids).await?;
        for k in &keys {
            actor.may_change(&k.key)?;
        }
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
}
