//! The `import-medusa` workflow: plan, then channels, keys and links, each with its
//! compensation.

use std::collections::{BTreeMap, HashMap, HashSet};

use keyward_flow::{Output, Step, StepContext, StepError, StepResponse, Workflow};
use serde::{Deserialize, Serialize};

use crate::events::EventName;
use crate::id::{ApiKeyId, SalesChannelId};
use crate::model::{ApiKeyType, SalesChannel};
use crate::service::Keyward;
use crate::store::StoredKey;
use crate::workflows::step_error;

use super::plan::CHANGED_MEANWHILE;
use super::{CHUNK, IMPORT_MEDUSA, ImportInput, ImportPlan, ImportReport, KeyWrites, Kind};

type Cx = StepContext<Keyward>;

fn retried<I, O>(step: Step<Keyward, I, O>) -> Step<Keyward, I, O> {
    step.max_retries(2)
        .retry_interval(std::time::Duration::from_millis(200))
}

/// The import's plan, as every later step and the result read it.
const IMPORT_PLAN: Output<ImportPlan> = Output::named("plan-import");
/// The channels the import wrote.
const CHANNELS_WRITTEN: Output<ChannelsWritten> = Output::named("import-sales-channels");
/// The keys the import wrote.
const KEYS_WRITTEN: Output<KeysWritten> = Output::named("import-api-keys");

/// `plan-import`: compares the source with keyward. Recorded, so a resumed run writes the same.
pub fn plan_import_step() -> Step<Keyward, ImportInput, ImportPlan> {
    Step::named(IMPORT_PLAN, |input: ImportInput, cx: Cx| async move {
        let (kw, run) = (cx.container(), cx.transaction_id());
        kw.progress.phase(run, "comparing with keyward");
        let plan = kw.plan_import(&input.set, input.update).await.map_err(step_error)?;
        kw.progress.total(
            run,
            plan.new_keys.len() + plan.changed_keys.len() + plan.links().count(),
        );
        Ok(StepResponse::new(plan))
    })
    .no_compensation()
}

/// What an import step wrote: the ids it inserted, and the rows it changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Written<Id, Row> {
    pub inserted: Vec<Id>,
    /// `(as written, as it was)`.
    pub updated: Vec<(Row, Row)>,
}

impl<Id, Row> Written<Id, Row> {
    fn inserted(inserted: Vec<Id>) -> Self {
        Self {
            inserted,
            updated: Vec::new(),
        }
    }
}

/// What the channel step wrote.
pub type ChannelsWritten = Written<SalesChannelId, SalesChannel>;
/// What the key step wrote.
pub type KeysWritten = Written<ApiKeyId, StoredKey>;

/// `import-sales-channels`: inserts the new channels and applies the changed ones where they
/// still hold what the plan read. `sales_channel.created` / `.updated`. Compensation deletes what
/// it inserted and puts back what it changed.
pub fn import_channels_step() -> Step<Keyward, ImportPlan, ChannelsWritten> {
    retried(Step::named(CHANNELS_WRITTEN, write_channels)).compensate(unwrite_channels)
}

async fn write_channels(plan: ImportPlan, cx: Cx) -> Result<StepResponse<ChannelsWritten>, StepError> {
    let kw = cx.container();
    kw.progress.phase(cx.transaction_id(), "writing sales channels");
    let ids: Vec<SalesChannelId> = plan.new_channels.iter().map(|c| c.id.clone()).collect();
    // A repeated invocation finds its own earlier inserts.
    let present: HashSet<SalesChannelId> = kw
        .channels_by_ids(&ids)
        .await
        .map_err(step_error)?
        .into_iter()
        .map(|c| c.id)
        .collect();
    let fresh: Vec<SalesChannel> = plan
        .new_channels
        .iter()
        .filter(|c| !present.contains(&c.id))
        .cloned()
        .collect();
    for chunk in fresh.chunks(CHUNK) {
        kw.store.insert_sales_channels(chunk).await.map_err(step_error)?;
    }
    let mut written = ChannelsWritten::inserted(ids);
    for (current, merged) in &plan.changed_channels {
        if kw
            .store
            .restore_sales_channel(current, merged)
            .await
            .map_err(step_error)?
        {
            written.updated.push((merged.clone(), current.clone()));
        }
    }
    let mut response = StepResponse::new(written.clone());
    for id in &written.inserted {
        response = response.event(EventName::SalesChannelCreated, serde_json::json!({ "id": id }));
    }
    for (c, _) in &written.updated {
        response = response.event(EventName::SalesChannelUpdated, serde_json::json!({ "id": c.id }));
    }
    Ok(response)
}

async fn unwrite_channels(written: Option<ChannelsWritten>, cx: Cx) -> Result<(), StepError> {
    let written = match written {
        Some(w) => w,
        None => ChannelsWritten::inserted(
            cx.input::<ImportPlan>()?
                .new_channels
                .into_iter()
                .map(|c| c.id)
                .collect(),
        ),
    };
    let kw = cx.container();
    for (as_written, previous) in &written.updated {
        if !kw
            .store
            .restore_sales_channel(as_written, previous)
            .await
            .map_err(step_error)?
        {
            cx.conflict(format!(
                "sales channel {} changed after the import; left as it is",
                as_written.id
            ));
        }
    }
    for chunk in written.inserted.chunks(CHUNK) {
        kw.delete_sales_channels(chunk).await.map_err(step_error)?;
    }
    Ok(())
}

/// `import-api-keys`: inserts the new keys (a thousand per transaction) and applies the changed
/// ones where they still hold what the plan read. `api_key.created` (with `sales_channel_ids`
/// for a publishable key the links step will link), `.updated`, and `.revoked` where the source
/// brought a revocation. Compensation removes what it inserted and puts back
/// what it changed, except a revocation: that stays.
pub fn import_keys_step() -> Step<Keyward, KeyWrites, KeysWritten> {
    retried(Step::named(KEYS_WRITTEN, write_keys)).compensate(unwrite_keys)
}

async fn write_keys(plan: KeyWrites, cx: Cx) -> Result<StepResponse<KeysWritten>, StepError> {
    let kw = cx.container();
    kw.progress.phase(cx.transaction_id(), "writing keys");
    for chunk in plan.new_keys.chunks(CHUNK) {
        // Ids already present (a repeated invocation) are left alone by the store.
        kw.store.restore_api_keys(chunk).await.map_err(step_error)?;
        kw.progress.advance(cx.transaction_id(), chunk.len());
    }
    let mut written = KeysWritten::inserted(plan.new_keys.iter().map(|k| k.key.id.clone()).collect());
    let mut revoked = Vec::new();
    for chunk in plan.changed_keys.chunks(CHUNK) {
        let replaced = kw.store.replace_api_keys(chunk).await.map_err(step_error)?;
        for (current, merged) in chunk.iter().filter(|(c, _)| replaced.contains(&c.key.id)) {
            if merged.key.revoked_at != current.key.revoked_at {
                revoked.push(serde_json::json!({ "id": merged.key.id, "revoked_at": merged.key.revoked_at }));
            }
            written.updated.push((merged.clone(), current.clone()));
        }
        kw.progress.advance(cx.transaction_id(), chunk.len());
    }
    let mut response = StepResponse::new(written.clone());
    let mut channels: HashMap<&ApiKeyId, Vec<&SalesChannelId>> = HashMap::new();
    for (k, c) in &plan.new_links {
        channels.entry(k).or_default().push(c);
    }
    for k in &plan.new_keys {
        let id = &k.key.id;
        response = response.event(
            EventName::ApiKeyCreated,
            match (k.key.key_type, channels.get(id)) {
                (ApiKeyType::Publishable, Some(c)) => serde_json::json!({ "id": id, "sales_channel_ids": c }),
                _ => serde_json::json!({ "id": id }),
            },
        );
    }
    for (k, _) in &written.updated {
        response = response.event(EventName::ApiKeyUpdated, serde_json::json!({ "id": k.key.id }));
    }
    for data in revoked {
        response = response.event(EventName::ApiKeyRevoked, data);
    }
    Ok(response)
}

async fn unwrite_keys(written: Option<KeysWritten>, cx: Cx) -> Result<(), StepError> {
    let written = match written {
        Some(w) => w,
        None => KeysWritten::inserted(
            cx.input::<KeyWrites>()?
                .new_keys
                .into_iter()
                .map(|k| k.key.id)
                .collect(),
        ),
    };
    let kw = cx.container();
    // Back to what keyward had, but a revocation the source brought stays: undoing an
    // import never makes a key valid again.
    let back: Vec<(StoredKey, StoredKey)> = written
        .updated
        .iter()
        .map(|(as_written, previous)| {
            let mut previous = previous.clone();
            previous.key.revoked_at = as_written.key.revoked_at;
            previous.key.revoked_by.clone_from(&as_written.key.revoked_by);
            (as_written.clone(), previous)
        })
        .collect();
    let restored = kw.store.replace_api_keys(&back).await.map_err(step_error)?;
    for (k, _) in back.iter().filter(|(k, _)| !restored.contains(&k.key.id)) {
        cx.conflict(format!("api key {} changed after the import; left as it is", k.key.id));
    }
    for chunk in written.inserted.chunks(CHUNK) {
        kw.discard_api_keys(chunk).await.map_err(step_error)?;
    }
    Ok(())
}

/// `import-links`: links the planned channels to their keys, a thousand per transaction. A key
/// this run imported announced its channels in its `api_key.created`; an existing key gaining
/// links (with `update`) gets `api_key.updated` `{id, sales_channels_added}`. Compensation
/// unlinks what it linked.
pub fn import_links_step() -> Step<Keyward, ImportPlan, Vec<(ApiKeyId, SalesChannelId)>> {
    retried(Step::new("import-links", |plan: ImportPlan, cx: Cx| async move {
        let kw = cx.container();
        kw.progress.phase(cx.transaction_id(), "writing links");
        let now = kw.now();
        let mut linked = Vec::new();
        let links: Vec<(ApiKeyId, SalesChannelId)> = plan.links().cloned().collect();
        for chunk in links.chunks(CHUNK) {
            linked.extend(kw.store.insert_links(chunk, now).await.map_err(step_error)?);
            kw.progress.advance(cx.transaction_id(), chunk.len());
        }
        let existing: HashSet<&(ApiKeyId, SalesChannelId)> = plan.added_links.iter().collect();
        let mut added: BTreeMap<&ApiKeyId, Vec<&SalesChannelId>> = BTreeMap::new();
        for (k, c) in linked.iter().filter(|l| existing.contains(l)) {
            added.entry(k).or_default().push(c);
        }
        kw.progress.phase(cx.transaction_id(), "publishing events");
        let mut response = StepResponse::new(linked.clone());
        for (id, channels) in added {
            response = response.event(
                EventName::ApiKeyUpdated,
                serde_json::json!({ "id": id, "sales_channels_added": channels }),
            );
        }
        Ok(response)
    }))
    .compensate(|linked: Option<Vec<(ApiKeyId, SalesChannelId)>>, cx: Cx| async move {
        let linked = match linked {
            Some(l) => l,
            None => cx.input::<ImportPlan>()?.links().cloned().collect(),
        };
        let kw = cx.container();
        let mut by_key: BTreeMap<ApiKeyId, Vec<SalesChannelId>> = BTreeMap::new();
        for (k, c) in linked {
            by_key.entry(k).or_default().push(c);
        }
        for (key, channels) in by_key {
            match kw.remove_sales_channels(&key, &channels).await {
                // The key is gone (removed by the key step's compensation), and so its links.
                Err(e) if e.kind == crate::ErrorKind::NotFound => {}
                other => {
                    other.map_err(step_error)?;
                }
            }
        }
        Ok(())
    })
}

/// `import-medusa`: plan, then channels, keys and links; returns the report (with the rows that
/// changed in keyward while it ran counted as conflicts).
pub fn import_medusa_workflow() -> Workflow<Keyward, ImportInput, ImportReport> {
    Workflow::<Keyward, ImportInput, ImportReport>::new(IMPORT_MEDUSA)
        .step(&plan_import_step(), |d| d.input())
        .step(&import_channels_step(), |d| d.output(IMPORT_PLAN))
        .step(&import_keys_step(), |d| {
            let input: ImportInput = d.input()?;
            KeyWrites::of(&input.set, d.output(IMPORT_PLAN)?).map_err(step_error)
        })
        .step(&import_links_step(), |d| d.output(IMPORT_PLAN))
        .returns(|d| {
            let plan = d.output(IMPORT_PLAN)?;
            let written_channels = d.output(CHANNELS_WRITTEN)?;
            let written_keys = d.output(KEYS_WRITTEN)?;
            let mut report = plan.report;
            for (current, _) in &plan.changed_channels {
                if !written_channels.updated.iter().any(|(w, _)| w.id == current.id) {
                    report.sales_channels.updated -= 1;
                    report.conflict(Kind::SalesChannel, current.id.as_str(), Vec::new(), CHANGED_MEANWHILE);
                }
            }
            for (current, _) in &plan.changed_keys {
                if !written_keys.updated.iter().any(|(w, _)| w.key.id == current.key.id) {
                    report.api_keys.updated -= 1;
                    report.conflict(Kind::ApiKey, current.key.id.as_str(), Vec::new(), CHANGED_MEANWHILE);
                }
            }
            Ok(report)
        })
}
