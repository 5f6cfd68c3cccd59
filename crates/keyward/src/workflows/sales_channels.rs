//! The sales-channel workflows: create, update, delete (with the key links a delete removes).

use keyward_flow::{Output, Step, StepResponse, Workflow};
use serde::{Deserialize, Serialize};

use crate::actor::Actor;
use crate::error::{Error, Result};
use crate::events::EventName;
use crate::id::{ApiKeyId, SalesChannelId};
use crate::model::{CreateSalesChannel, SalesChannel, UpdateSalesChannel};
use crate::policy::Permission;
use crate::service::Keyward;

use super::{
    CREATE_SALES_CHANNELS, Cx, DELETE_SALES_CHANNELS, UPDATE_SALES_CHANNELS, Workflows, events, retried, step_error,
};

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

/// The channels as planned (ids fixed), as the create step reads them.
const PLANNED_CHANNELS: Output<Vec<CreateSalesChannel>> = Output::named("prepare-sales-channels");

/// `prepare-sales-channels`: gives every channel to create its id.
pub fn prepare_sales_channels_step() -> Step<Keyward, Vec<CreateSalesChannel>, Vec<CreateSalesChannel>> {
    Step::named(
        PLANNED_CHANNELS,
        |channels: Vec<CreateSalesChannel>, cx: Cx| async move {
            Ok(StepResponse::new(
                cx.container().plan_sales_channels(channels).map_err(step_error)?,
            ))
        },
    )
    .no_compensation()
}

pub(super) fn planned_channel_ids(channels: &[CreateSalesChannel]) -> Vec<SalesChannelId> {
    channels.iter().filter_map(|c| c.id.clone()).collect()
}

/// The channels `create-sales-channels` wrote.
const CREATED_CHANNELS: Output<Vec<SalesChannel>> = Output::named("create-sales-channels");

/// `create-sales-channels`: inserts the planned channels; compensation deletes them.
pub fn create_sales_channels_step() -> Step<Keyward, Vec<CreateSalesChannel>, Vec<SalesChannel>> {
    retried(Step::named(
        CREATED_CHANNELS,
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

/// The channel as loaded before its update.
const LOADED_CHANNEL: Output<SalesChannel> = Output::named("load-sales-channel");

/// `load-sales-channel`: the channel before the change (`not_found` when missing).
pub fn load_sales_channel_step() -> Step<Keyward, SalesChannelId, SalesChannel> {
    Step::named(LOADED_CHANNEL, |id: SalesChannelId, cx: Cx| async move {
        Ok(StepResponse::new(
            cx.container().retrieve_sales_channel(&id).await.map_err(step_error)?,
        ))
    })
    .no_compensation()
}

/// The channel as updated.
const UPDATED_CHANNEL: Output<SalesChannel> = Output::named("update-sales-channels");

/// `update-sales-channels`: applies the patch; compensation writes the old values back where the
/// channel still holds this run's.
pub fn update_sales_channel_step() -> Step<Keyward, ChannelPatchPlan, SalesChannel> {
    retried(Step::named(
        UPDATED_CHANNEL,
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

/// The channels' delete snapshot, as the delete step reads it.
const CHANNEL_DELETE_PLAN: Output<ChannelDeletePlan> = Output::named("prepare-sales-channel-delete");

/// `prepare-sales-channel-delete`: snapshots the channels and their key links.
pub fn prepare_channel_delete_step() -> Step<Keyward, Vec<SalesChannelId>, ChannelDeletePlan> {
    Step::named(CHANNEL_DELETE_PLAN, |ids: Vec<SalesChannelId>, cx: Cx| async move {
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
    })
    .no_compensation()
}

/// The ids `delete-sales-channels` deleted.
const DELETED_CHANNELS: Output<Vec<SalesChannelId>> = Output::named("delete-sales-channels");

/// `delete-sales-channels`: deletes the channels and their links; compensation puts back the
/// channels this run deleted and their links.
pub fn delete_sales_channels_step() -> Step<Keyward, ChannelDeletePlan, Vec<SalesChannelId>> {
    retried(Step::named(
        DELETED_CHANNELS,
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

/// `create-sales-channels`: prepare ids, create.
pub fn create_sales_channels_workflow() -> Workflow<Keyward, Vec<CreateSalesChannel>, Vec<SalesChannel>> {
    Workflow::<Keyward, Vec<CreateSalesChannel>, Vec<SalesChannel>>::new(CREATE_SALES_CHANNELS)
        .step(&prepare_sales_channels_step(), |d| d.input())
        .step(&create_sales_channels_step(), |d| d.output(PLANNED_CHANNELS))
        .returns(|d| d.output(CREATED_CHANNELS))
}

/// `update-sales-channels`: load (404), then apply the patch.
pub fn update_sales_channels_workflow() -> Workflow<Keyward, UpdateSalesChannelInput, SalesChannel> {
    Workflow::<Keyward, UpdateSalesChannelInput, SalesChannel>::new(UPDATE_SALES_CHANNELS)
        .step(&load_sales_channel_step(), |d| Ok(d.input()?.id))
        .step(&update_sales_channel_step(), |d| {
            Ok(ChannelPatchPlan {
                before: d.output(LOADED_CHANNEL)?,
                patch: d.input()?.patch,
            })
        })
        .returns(|d| d.output(UPDATED_CHANNEL))
}

/// `delete-sales-channels`: snapshot, then delete channels and links.
pub fn delete_sales_channels_workflow() -> Workflow<Keyward, Vec<SalesChannelId>, Vec<SalesChannelId>> {
    Workflow::<Keyward, Vec<SalesChannelId>, Vec<SalesChannelId>>::new(DELETE_SALES_CHANNELS)
        .step(&prepare_channel_delete_step(), |d| d.input())
        .step(&delete_sales_channels_step(), |d| d.output(CHANNEL_DELETE_PLAN))
        .returns(|d| d.output(DELETED_CHANNELS))
}

impl Workflows {
    /// Creates a sales channel as `actor`.
    pub async fn create_sales_channel(&self, actor: &Actor, input: CreateSalesChannel) -> Result<SalesChannel> {
        actor.require(Permission::SalesChannelsWrite)?;
        if input.name.trim().is_empty() {
            return Err(Error::invalid_data("A sales channel needs a name"));
        }
        check_channel_fields(Some(&input.name), input.description.as_deref(), input.metadata.as_ref())?;
        self.run(&self.create_channels, vec![input])
            .await?
            .result
            .and_then(|mut created| created.pop())
            .ok_or_else(|| Error::unexpected("the workflow returned no sales channel"))
    }

    /// Applies a partial update to a sales channel (`not_found` when missing).
    pub async fn update_sales_channel(
        &self,
        actor: &Actor,
        id: &SalesChannelId,
        patch: &UpdateSalesChannel,
    ) -> Result<SalesChannel> {
        actor.require(Permission::SalesChannelsWrite)?;
        if patch.name.as_deref().is_some_and(|n| n.trim().is_empty()) {
            return Err(Error::invalid_data("A sales channel needs a name"));
        }
        check_channel_fields(
            patch.name.as_deref(),
            patch.description.as_ref().and_then(|d| d.as_deref()),
            patch.metadata.as_ref().and_then(|m| m.as_ref()),
        )?;
        let input = UpdateSalesChannelInput {
            id: id.clone(),
            patch: patch.clone(),
        };
        self.answer(&self.update_channel, input, "sales channel").await
    }

    /// Deletes sales channels and their links to keys; unknown ids are ignored.
    pub async fn delete_sales_channels(&self, actor: &Actor, ids: &[SalesChannelId]) -> Result<()> {
        actor.require(Permission::SalesChannelsWrite)?;
        if ids.is_empty() {
            return Ok(());
        }
        self.run(&self.delete_channels, ids.to_vec()).await?;
        Ok(())
    }
}

/// A channel's name, description and metadata within their bounds.
fn check_channel_fields(
    name: Option<&str>,
    description: Option<&str>,
    metadata: Option<&serde_json::Value>,
) -> Result<()> {
    use crate::policy::{MAX_DESCRIPTION_CHARS, MAX_NAME_CHARS, check_length};
    if let Some(n) = name {
        check_length("name", n, MAX_NAME_CHARS)?;
    }
    if let Some(d) = description {
        check_length("description", d, MAX_DESCRIPTION_CHARS)?;
    }
    crate::policy::check_metadata_value(metadata)
}

impl Keyward {
    /// Gives each channel to create its id (keeping ids already given).
    pub(crate) fn plan_sales_channels(&self, channels: Vec<CreateSalesChannel>) -> Result<Vec<CreateSalesChannel>> {
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
}
