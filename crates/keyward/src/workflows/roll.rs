//! `roll-api-key`: a new key with the old one's title, type and channels, and the old key revoked
//! after the grace period; both happen or neither does.

use keyward_flow::{Output, Step, StepError, StepResponse, Workflow};
use serde::{Deserialize, Serialize};

use crate::actor::Actor;
use crate::error::{Error, Result};
use crate::events::EventName;
use crate::id::{ApiKeyId, SalesChannelId};
use crate::model::{ApiKey, CreateApiKey, CreatedApiKey};
use crate::policy::Permission;
use crate::service::Keyward;
use crate::store::{KeyShape, KeyTerms, RevokeOnce};
use crate::token::PlainToken;

use super::{
    CREATED_KEYS, Cx, LinkPlan, REVOKED_KEYS, ROLL_API_KEY, RevokePlan, Workflows, create_api_keys_step,
    link_sales_channels_step, revoke_api_keys_step, step_error,
};

/// `roll-api-key`: replace a key; the old one is revoked `revoke_in` seconds from now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollApiKeyInput {
    pub id: ApiKeyId,
    pub rolled_by: String,
    pub revoke_in: Option<i64>,
    /// Who rolls (the system in runs recorded before actors were).
    #[serde(default)]
    pub actor: Actor,
}

/// What `roll-api-key` returns (the new key's token is handed out beside it, never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolledApiKey {
    pub api_key: ApiKey,
    pub previous_api_key: ApiKey,
}

/// A roll: the new key (id fixed), the channels it inherits, and the old key's revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RollPlan {
    pub new_key: CreateApiKey,
    pub channels: Vec<SalesChannelId>,
    pub revoke: RevokePlan,
}

/// The roll's plan, as the later steps read it.
const ROLL_PLAN: Output<RollPlan> = Output::named("prepare-roll");

/// `prepare-roll`: checks the key can be rolled, fixes the new key's id and the old key's
/// revocation instant, and records the channels the new key inherits.
pub fn prepare_roll_step() -> Step<Keyward, RollApiKeyInput, RollPlan> {
    Step::named(ROLL_PLAN, |input: RollApiKeyInput, cx: Cx| async move {
        let plan = cx
            .container()
            .plan_roll(&input.actor, &input.id, &input.rolled_by, input.revoke_in)
            .await
            .map_err(step_error)?;
        Ok(StepResponse::new(plan))
    })
    .no_compensation()
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

/// `roll-api-key`: prepare, create the new key, give it the old key's channels, revoke the old
/// key with the grace period. Both keys change or neither does.
pub fn roll_api_key_workflow() -> Workflow<Keyward, RollApiKeyInput, RolledApiKey> {
    let missing = |what: &str| StepError::permanent(format!("the roll plan has no {what}"));
    Workflow::<Keyward, RollApiKeyInput, RolledApiKey>::new(ROLL_API_KEY)
        .step(&prepare_roll_step(), |d| d.input())
        .step(&create_api_keys_step(), |d| Ok(vec![d.output(ROLL_PLAN)?.new_key]))
        .when(
            |d| Ok(!d.output(ROLL_PLAN)?.channels.is_empty()),
            &link_sales_channels_step(),
            move |d| {
                let plan = d.output(ROLL_PLAN)?;
                Ok(LinkPlan {
                    id: plan.new_key.id.ok_or_else(|| missing("key id"))?,
                    add: plan.channels,
                    remove: Vec::new(),
                    previous: Vec::new(),
                })
            },
        )
        .step(&revoke_api_keys_step(), |d| Ok(d.output(ROLL_PLAN)?.revoke))
        .step(&announce_roll_step(), move |d| {
            let plan = d.output(ROLL_PLAN)?;
            let id = plan.new_key.id.ok_or_else(|| missing("key id"))?;
            let previous = plan.revoke.ids.into_iter().next().ok_or_else(|| missing("old key"))?;
            Ok((id, previous))
        })
        .returns(|d| {
            let api_key = d.output(CREATED_KEYS)?.into_iter().next();
            let previous_api_key = d.output(REVOKED_KEYS)?.into_iter().next();
            match (api_key, previous_api_key) {
                (Some(api_key), Some(previous_api_key)) => Ok(RolledApiKey {
                    api_key,
                    previous_api_key,
                }),
                _ => Err(StepError::permanent("the roll produced no key")),
            }
        })
}

impl Workflows {
    /// Replaces a key: a new key with its title, type and channels, and the old key revoked
    /// `grace_seconds` from now (at once when `None` or `<= 0`). Returns the new key with its
    /// plain token and the old key as revoked.
    pub async fn roll_api_key(
        &self,
        actor: &Actor,
        id: &ApiKeyId,
        rolled_by: &str,
        grace_seconds: Option<i64>,
    ) -> Result<(CreatedApiKey, ApiKey)> {
        let input = RollApiKeyInput {
            id: id.clone(),
            rolled_by: rolled_by.to_owned(),
            revoke_in: grace_seconds,
            actor: actor.clone(),
        };
        let run = self.run(&self.roll, input).await?;
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
}

impl Keyward {
    /// Checks a key can be rolled and fixes the new key's id and the old key's revocation.
    pub(crate) async fn plan_roll(
        &self,
        actor: &Actor,
        id: &ApiKeyId,
        rolled_by: &str,
        grace_seconds: Option<i64>,
    ) -> Result<RollPlan> {
        actor.require(Permission::ApiKeysWrite)?;
        let old = self.retrieve_api_key(id).await?;
        // A roll hands out a key with the old one's access: the actor must be able to change
        // the old key, and to create its successor.
        actor.may_change(&old)?;
        let rolled_by = actor.recorded_as(rolled_by);
        // A revoked key stays revoked: rolling it would hand out a working successor.
        if old.is_revoked_at(self.now()) {
            return Err(crate::service::already_revoked_of(old.key_type, 1));
        }
        // So does an expired one; the successor expires when the key it replaces does.
        if old.is_expired_at(self.now()) {
            return Err(Error::invalid_data(format!(
                "API key {} has expired; an expired key cannot be rolled",
                old.id
            )));
        }
        if rolled_by.is_empty() {
            return Err(Error::invalid_data(crate::service::REVOKED_BY_REQUIRED));
        }
        let channels = self.channel_ids_of(id).await?;
        let mut successor = CreateApiKey::new(old.title.clone(), old.key_type, rolled_by);
        successor.expires_at = old.expires_at;
        successor.policy = old.policy.clone();
        let new_key = self
            .plan_api_keys(vec![successor], actor)?
            .pop()
            .ok_or_else(|| Error::unexpected("planning the new key gave nothing"))?;
        let mut revoke = self
            .plan_revocation(actor, std::slice::from_ref(id), rolled_by, grace_seconds)
            .await?;
        // Checked again where the old key is revoked: of two rolls that race, one replaces it,
        // and a rename, link, expiry or policy change that came after this plan refuses the roll.
        revoke.once = RevokeOnce::Any;
        revoke.unchanged = Some(KeyShape {
            title: old.title.clone(),
            channels: {
                let mut c: Vec<SalesChannelId> = channels.clone();
                c.sort();
                c
            },
            terms: Some(KeyTerms {
                expires_at: old.expires_at,
                policy: old.policy.clone(),
            }),
        });
        Ok(RollPlan {
            new_key,
            channels,
            revoke,
        })
    }
}
