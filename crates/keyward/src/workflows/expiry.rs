//! `notify-api-key-expiry`: the notices of keys' expiries, each sent once per key and expiry
//! instant — `api_key.expiring` a set time before a key expires, `api_key.expired` once it has.
//! A scheduled job runs it (on one node per tick); two runs that overlap anyway (a tick on
//! each side of a crash) still send each notice once, because a notice is written with the run
//! that sends it and a run publishes only the notices it holds.

use std::time::Duration;

use keyward_flow::{Output, Step, StepResponse, Workflow};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::events::EventName;
use crate::service::Keyward;
use crate::store::{ExpiryNotice, NoticeKind};

use super::{Cx, Workflows, retried, step_error};

/// The job that runs [`notify_api_key_expiry_workflow`].
pub const NOTIFY_API_KEY_EXPIRY: &str = "notify-api-key-expiry";

/// How long before a key expires `api_key.expiring` is sent, unless configured: 7 days.
pub const DEFAULT_EXPIRY_WARNING: Duration = Duration::from_secs(7 * 86_400);

/// Notices sent per run at most; the next tick sends the rest.
const NOTICES_PER_RUN: u32 = 500;

/// What a run of `notify-api-key-expiry` is told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiryNoticesInput {
    /// Seconds before a key's expiry its `api_key.expiring` is due.
    pub warn_before: i64,
}

/// The notices due, as planned.
pub const DUE_NOTICES: Output<Vec<ExpiryNotice>> = Output::named("plan-expiry-notices");

/// The notices this run sent.
pub const SENT_NOTICES: Output<Vec<ExpiryNotice>> = Output::named("send-expiry-notices");

/// `plan-expiry-notices`: the notices due now, read once (the plan a resumed run keeps).
pub fn plan_expiry_notices_step() -> Step<Keyward, ExpiryNoticesInput, Vec<ExpiryNotice>> {
    Step::named(DUE_NOTICES, |input: ExpiryNoticesInput, cx: Cx| async move {
        let kw = cx.container();
        let now = kw.now();
        let due = kw
            .store()
            .expiry_notices_due(now, now.plus_seconds(input.warn_before), NOTICES_PER_RUN)
            .await
            .map_err(step_error)?;
        Ok(StepResponse::new(due))
    })
    .no_compensation()
}

/// `send-expiry-notices`: writes the planned notices as this run's and publishes an event for
/// each notice the run holds (a notice another run wrote first is that run's to publish).
/// Invoked again after a crash, it finds its own notices and publishes them. Compensation
/// forgets them, so a run that did not finish leaves them due.
pub fn send_expiry_notices_step() -> Step<Keyward, Vec<ExpiryNotice>, Vec<ExpiryNotice>> {
    retried(Step::named(
        SENT_NOTICES,
        |planned: Vec<ExpiryNotice>, cx: Cx| async move {
            let kw = cx.container();
            let held = kw
                .store()
                .record_expiry_notices(&planned, cx.transaction_id(), kw.now())
                .await
                .map_err(step_error)?;
            let mut response = StepResponse::new(held.clone());
            for notice in &held {
                let name = match notice.kind {
                    NoticeKind::Expiring => EventName::ApiKeyExpiring,
                    NoticeKind::Expired => EventName::ApiKeyExpired,
                };
                response = response.event(
                    name,
                    serde_json::json!({"id": notice.id, "expires_at": notice.expires_at}),
                );
            }
            Ok(response)
        },
    ))
    // Whatever the step got to write is this run's, found by its transaction id.
    .compensate(|_sent: Option<Vec<ExpiryNotice>>, cx: Cx| async move {
        cx.container()
            .store()
            .forget_expiry_notices(cx.transaction_id())
            .await
            .map_err(step_error)
    })
}

/// `notify-api-key-expiry`: plan, then send.
pub fn notify_api_key_expiry_workflow() -> Workflow<Keyward, ExpiryNoticesInput, Vec<ExpiryNotice>> {
    Workflow::<Keyward, ExpiryNoticesInput, Vec<ExpiryNotice>>::new(NOTIFY_API_KEY_EXPIRY)
        .step(&plan_expiry_notices_step(), |d| d.input())
        .step(&send_expiry_notices_step(), |d| d.output(DUE_NOTICES))
        .returns(|d| d.output(SENT_NOTICES))
}

impl Workflows {
    /// Sends the expiry notices due now (`api_key.expiring` `warn_before` ahead of a key's
    /// expiry, `api_key.expired` after it), each once; returns the notices this call sent.
    pub async fn notify_api_key_expiry(&self, warn_before: Duration) -> Result<Vec<ExpiryNotice>> {
        let input = ExpiryNoticesInput {
            warn_before: i64::try_from(warn_before.as_secs()).unwrap_or(i64::MAX),
        };
        let run = self.run(&self.expiry, input).await?;
        Ok(run.result.unwrap_or_default())
    }
}
