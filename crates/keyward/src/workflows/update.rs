//! `update-api-keys`: a title change, put back where the key still has this run's title.

use super::*;

/// `update-api-keys`: set the title of these keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateApiKeysInput {
    pub ids: Vec<ApiKeyId>,
    pub title: String,
}

/// A title change, with the titles to put back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TitlePlan {
    pub ids: Vec<ApiKeyId>,
    pub title: String,
    pub previous: Vec<(ApiKeyId, String)>,
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

/// `update-api-keys`: sets the title; compensation puts the old titles back where the keys still
/// hold this run's title.
pub fn update_api_keys_step() -> Step<Keyward, TitlePlan, Vec<ApiKey>> {
    retried(Step::named(UPDATED_KEYS, |plan: TitlePlan, cx: Cx| async move {
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
pub(super) fn title_undo(plan: &TitlePlan, updated: Option<&[ApiKeyId]>) -> Vec<TitleUndo> {
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

/// `update-api-keys`: load (404 for a missing key), then set the title.
pub fn update_api_keys_workflow() -> Workflow<Keyward, UpdateApiKeysInput, Vec<ApiKey>> {
    Workflow::<Keyward, UpdateApiKeysInput, Vec<ApiKey>>::new(UPDATE_API_KEYS)
        .step(&load_api_keys_step(), |d| Ok(d.input()?.ids))
        .step(&update_api_keys_step(), |d| {
            let input = d.input()?;
            let previous = d.output(LOADED_KEYS)?.into_iter().map(|k| (k.id, k.title)).collect();
            Ok(TitlePlan {
                ids: input.ids,
                title: input.title,
                previous,
            })
        })
        .returns(|d| d.output(UPDATED_KEYS))
}

impl Workflows {
    /// Sets the title of one key (`not_found` when it does not exist).
    pub async fn update_api_key(&self, id: &ApiKeyId, title: &str) -> Result<ApiKey> {
        let input = UpdateApiKeysInput {
            ids: vec![id.clone()],
            title: title.to_owned(),
        };
        self.one(self.engine.run(&self.update, input, RunOptions::default()).await, id)
    }

    /// Sets the title of every key `selector` matches (Medusa's `{ selector, update }`).
    pub async fn update_api_keys(&self, selector: &ApiKeyFilter, data: &crate::UpdateApiKey) -> Result<Vec<ApiKey>> {
        let ids = self.kw().matching_ids(selector).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let input = UpdateApiKeysInput {
            ids,
            title: data.title.clone(),
        };
        self.all(self.engine.run(&self.update, input, RunOptions::default()).await)
    }
}
