//! `link-sales-channels-to-api-key`: a publishable key's channels added and removed.

use keyward_flow::{Step, StepError, StepResponse, Workflow};
use serde::{Deserialize, Serialize};

use crate::actor::Actor;
use crate::error::{Error, ErrorKind, Result};
use crate::events::EventName;
use crate::id::{ApiKeyId, SalesChannelId};
use crate::model::ApiKeyType;
use crate::policy::Permission;
use crate::service::Keyward;
use crate::store::Blocked;

use super::{Cx, LINK_SALES_CHANNELS_TO_API_KEY, Workflows, retried, step_error};

/// `link-sales-channels-to-api-key`: add and remove a publishable key's channels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSalesChannelsInput {
    pub id: ApiKeyId,
    #[serde(default)]
    pub add: Vec<SalesChannelId>,
    #[serde(default)]
    pub remove: Vec<SalesChannelId>,
    /// Who links (the system in runs recorded before actors were).
    #[serde(default)]
    pub actor: Actor,
}

/// A link change with the key's channels before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkPlan {
    pub id: ApiKeyId,
    pub add: Vec<SalesChannelId>,
    pub remove: Vec<SalesChannelId>,
    pub previous: Vec<SalesChannelId>,
}

/// What a link step changed: the channels it linked and those it unlinked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkUndo {
    pub id: ApiKeyId,
    pub linked: Vec<SalesChannelId>,
    pub unlinked: Vec<SalesChannelId>,
}

/// `validate-sales-channels-exist`: the key exists, is publishable when channels are added,
/// every added channel exists; records the key's channels before the change.
pub fn validate_link_step() -> Step<Keyward, LinkSalesChannelsInput, LinkPlan> {
    Step::new(
        "validate-sales-channels-exist",
        |input: LinkSalesChannelsInput, cx: Cx| async move {
            let plan = cx
                .container()
                .plan_link(&input.actor, &input.id, &input.add, &input.remove)
                .await
                .map_err(step_error)?;
            Ok(StepResponse::new(plan))
        },
    )
    .no_compensation()
}

/// `link-sales-channels-to-api-key`: adds then removes links; compensation unlinks what this run
/// linked and links again what it unlinked.
pub fn link_sales_channels_step() -> Step<Keyward, LinkPlan, ()> {
    retried(Step::new("link-sales-channels-to-api-key", link)).compensate(unlink)
}

async fn link(plan: LinkPlan, cx: Cx) -> Result<StepResponse<()>, StepError> {
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
}

async fn unlink(undo: Option<LinkUndo>, cx: Cx) -> Result<(), StepError> {
    let undo = match undo {
        Some(u) => u,
        // Cut off mid-way: what it may have done, judged from the plan.
        None => {
            let plan = cx.input::<LinkPlan>()?;
            LinkUndo {
                linked: plan
                    .add
                    .iter()
                    .filter(|c| !plan.previous.contains(c))
                    .cloned()
                    .collect(),
                unlinked: plan
                    .remove
                    .iter()
                    .filter(|c| plan.previous.contains(c))
                    .cloned()
                    .collect(),
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
}

pub(super) fn by_key(links: &[(ApiKeyId, SalesChannelId)]) -> Vec<(ApiKeyId, Vec<SalesChannelId>)> {
    let mut grouped: std::collections::BTreeMap<ApiKeyId, Vec<SalesChannelId>> = Default::default();
    for (k, c) in links {
        grouped.entry(k.clone()).or_default().push(c.clone());
    }
    grouped.into_iter().collect()
}

/// `link-sales-channels-to-api-key`: validate, then link and unlink.
pub fn link_sales_channels_workflow() -> Workflow<Keyward, LinkSalesChannelsInput, ()> {
    let (validate, link) = (validate_link_step(), link_sales_channels_step());
    Workflow::<Keyward, LinkSalesChannelsInput, ()>::new(LINK_SALES_CHANNELS_TO_API_KEY)
        .step(&validate, |d| d.input())
        .step(&link, move |d| d.output(&validate))
}

impl Workflows {
    /// Adds and removes a publishable key's sales channels.
    pub async fn link_sales_channels(
        &self,
        actor: &Actor,
        id: &ApiKeyId,
        add: &[SalesChannelId],
        remove: &[SalesChannelId],
    ) -> Result<()> {
        let input = LinkSalesChannelsInput {
            id: id.clone(),
            add: add.to_vec(),
            remove: remove.to_vec(),
            actor: actor.clone(),
        };
        self.run(&self.link, input).await?;
        Ok(())
    }
}

impl Keyward {
    /// Links again `(key, channel)` pairs a compensation puts back, skipping (and reporting)
    /// keys and channels that no longer exist.
    pub(crate) async fn relink(&self, links: &[(ApiKeyId, SalesChannelId)]) -> Result<Vec<String>> {
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

    /// Checks a link change the way the writing transaction will, and records the key's
    /// channels before it.
    pub(crate) async fn plan_link(
        &self,
        actor: &Actor,
        id: &ApiKeyId,
        add: &[SalesChannelId],
        remove: &[SalesChannelId],
    ) -> Result<LinkPlan> {
        actor.require(Permission::ApiKeysWrite)?;
        let key = self.retrieve_api_key(id).await?;
        actor.may_change(&key)?;
        if !add.is_empty() {
            if key.key_type != ApiKeyType::Publishable {
                return Err(Error::invalid_data(
                    "Sales channels can only be associated with publishable API keys",
                ));
            }
            self.check_sales_channels_exist(add).await?;
        }
        let previous = self.channel_ids_of(id).await?;
        Ok(LinkPlan {
            id: id.clone(),
            add: crate::service::dedup(add),
            remove: crate::service::dedup(remove),
            previous,
        })
    }
}
