//! The api-key workflows on both stores: what they do, and that each one's compensation really
//! puts everything back when a step after it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use keyward::ManualClockExt;
use keyward::workflows::{
    self, ApiKeysCreated, DeleteApiKeysInput, LinkSalesChannelsInput, RevokeApiKeysInput, RollApiKeyInput,
    UpdateApiKeysInput, UpdateSalesChannelInput,
};
use keyward::{
    ApiKey, ApiKeyId, ApiKeyType, CreateApiKey, CreateSalesChannel, ErrorKind, Keyward, RevokeApiKey, SalesChannelId,
    UpdateSalesChannel, VerifyCode, Workflows,
};
use keyward_flow::{
    DeliveryOptions, Engine, Event, RunOptions, RunState, Step, StepContext, StepError, StepResponse, Subscriber,
    Workflow,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Each test on both stores, its body seeing the workflows (`flows`) on a fresh database, and
/// when it names a second binding the store beneath them (to set up rows the module never writes).
macro_rules! on_both_stores {
    ($( async fn $name:ident($flows:ident $(, $store:ident)?) $body:block )*) => {
        keyward_testkit::on_both_dbs! { $( async fn $name(db) {
            let $flows = db.workflows().await;
            $( let $store = db.store().await; )?
            $body
        } )* }
    };
}

/// Runs `workflow` with a step appended that always fails, on an engine of its own over the same
/// database, and checks the run was reverted. Returns the conflicts its compensations reported.
async fn run_then_fail<I: Serialize + DeserializeOwned + 'static, O: Serialize + DeserializeOwned + 'static>(
    flows: &Workflows,
    workflow: Workflow<Keyward, I, O>,
    input: I,
) -> Vec<String> {
    let engine = Engine::new(flows.kw().clone(), flows.engine().log().clone());
    let boom = Step::new("boom", |_: (), _cx: StepContext<Keyward>| async move {
        Err::<StepResponse<()>, _>(StepError::permanent("a later step failed"))
    });
    let handle = engine.register(workflow.step(&boom, |_| Ok(()))).unwrap();
    let run = engine
        .run(&handle, input, RunOptions::default().throw_on_error(false))
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Reverted, "{:?}", run.errors);
    assert_eq!(run.errors[0].error.message(), "a later step failed");
    run.errors
        .iter()
        .filter(|f| f.handler == keyward_flow::Handler::Conflict)
        .map(|f| f.error.message().to_owned())
        .collect()
}

/// Runs the update workflow writing `ours` to `id` on an engine of its own, with a last step in
/// which another writer applies `theirs` (if any) to the key before the step fails: the run is
/// reverted, its conflicts reported.
async fn update_undone_after(
    flows: &Workflows,
    id: &ApiKeyId,
    ours: keyward::UpdateApiKey,
    theirs: Option<keyward::UpdateApiKey>,
) -> keyward_flow::RunResult<Vec<ApiKey>> {
    let other_writer = {
        let (flows, id) = (flows.clone(), id.clone());
        Step::new(
            "someone-else-writes-then-a-step-fails",
            move |_: (), _cx: StepContext<Keyward>| {
                let (flows, id, theirs) = (flows.clone(), id.clone(), theirs.clone());
                async move {
                    if let Some(theirs) = theirs {
                        flows
                            .update_api_key_with(&keyward::Actor::System, &id, &theirs)
                            .await
                            .map_err(|e| StepError::permanent(e.message))?;
                    }
                    Err::<StepResponse<()>, _>(StepError::permanent("a later step failed"))
                }
            },
        )
    };
    let engine = Engine::new(flows.kw().clone(), flows.engine().log().clone());
    let handle = engine
        .register(workflows::update_api_keys_workflow().step(&other_writer, |_| Ok(())))
        .unwrap();
    let input = UpdateApiKeysInput {
        ids: vec![id.clone()],
        update: ours,
        actor: Default::default(),
    };
    let run = engine
        .run(&handle, input, RunOptions::default().throw_on_error(false))
        .await
        .unwrap();
    assert_eq!(run.state, RunState::Reverted);
    run
}

async fn channel(flows: &Workflows, name: &str) -> SalesChannelId {
    flows
        .create_sales_channel(
            &keyward::Actor::System,
            CreateSalesChannel {
                name: name.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .id
}

async fn linked_key(flows: &Workflows, title: &str, ch: &SalesChannelId) -> (ApiKey, String) {
    let created = flows
        .create_api_key(
            &keyward::Actor::System,
            CreateApiKey::new(title, ApiKeyType::Publishable, "t"),
        )
        .await
        .unwrap();
    flows
        .link_sales_channels(&keyward::Actor::System, &created.key.id, std::slice::from_ref(ch), &[])
        .await
        .unwrap();
    (created.key, created.token.expose().to_owned())
}

async fn channels_of(flows: &Workflows, id: &ApiKeyId) -> Vec<SalesChannelId> {
    flows.kw().sales_channels_of(std::slice::from_ref(id)).await.unwrap()[id]
        .iter()
        .map(|c| c.id.clone())
        .collect()
}

async fn titled(flows: &Workflows, title: &str) -> Vec<ApiKey> {
    keyward_testkit::keys_titled(flows.kw(), title).await
}

on_both_stores! {
    async fn create_runs_as_a_workflow_and_returns_the_only_copy_of_the_token(flows) {
        let created = flows
            .create_api_key(&keyward::Actor::System, CreateApiKey::new("CI", ApiKeyType::Secret, "user_1"))
            .await
            .unwrap();
        assert!(created.token.expose().starts_with("sk_"));
        assert_eq!(flows.kw().verify(created.token.expose()).await.unwrap().code, VerifyCode::Valid);
        let runs = flows.engine().log().list_runs(None, 10).await.unwrap();
        let run = runs.iter().find(|r| r.workflow == "create-api-keys").unwrap();
        assert_eq!(run.state, RunState::Done);
        let (_, steps) = flows.engine().log().load(&run.workflow, &run.transaction_id).await.unwrap().unwrap();
        let logged = format!("{:?} {:?}", run, steps);
        assert!(!logged.contains(created.token.expose()), "the run log never holds a plain secret");
    }

    async fn a_workflow_whose_second_step_fails_leaves_no_key_behind(flows) {
        let (prepare, create) = (workflows::prepare_api_keys_step(), workflows::create_api_keys_step());
        let wf = Workflow::<Keyward, Vec<CreateApiKey>, ()>::new("create-then-fail")
            .step(&prepare, |d| Ok(workflows::CreateApiKeysInput::new(&keyward::Actor::System, d.input()?)))
            .step(&create, move |d| d.output(&prepare));
        run_then_fail(&flows, wf, vec![CreateApiKey::new("doomed", ApiKeyType::Secret, "t")]).await;
        assert!(titled(&flows, "doomed").await.is_empty(), "create's compensation removed the key");
    }

    async fn a_failed_roll_leaves_the_old_key_untouched_and_no_new_key(flows) {
        let ch = channel(&flows, "EU").await;
        let (old, token) = linked_key(&flows, "rolling", &ch).await;
        let input = RollApiKeyInput { id: old.id.clone(), rolled_by: "ops".into(), revoke_in: Some(3600), actor: Default::default() };
        let conflicts = run_then_fail(&flows, workflows::roll_api_key_workflow(), input).await;
        assert!(conflicts.is_empty(), "{conflicts:?}");
        let keys = titled(&flows, "rolling").await;
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert_eq!(keys[0].revoked_at, None);
        assert_eq!(channels_of(&flows, &old.id).await, [ch]);
        assert_eq!(flows.kw().verify(&token).await.unwrap().code, VerifyCode::Valid);
    }

    async fn a_failed_roll_never_brings_back_an_old_key_whose_revocation_took_effect(flows) {
        let (old, token) = linked_key(&flows, "rolling", &channel(&flows, "EU").await).await;
        let input = RollApiKeyInput { id: old.id.clone(), rolled_by: "ops".into(), revoke_in: None, actor: Default::default() };
        let conflicts = run_then_fail(&flows, workflows::roll_api_key_workflow(), input).await;
        assert_eq!(conflicts, [format!("api key {} stays revoked: a revocation in effect is never undone", old.id)]);
        assert_eq!(flows.kw().verify(&token).await.unwrap().code, VerifyCode::Revoked);
        assert_eq!(titled(&flows, "rolling").await.len(), 1, "the new key is gone");
    }

    async fn a_roll_gives_the_new_key_the_old_ones_title_type_and_channels(flows) {
        let ch = channel(&flows, "EU").await;
        let (old, _) = linked_key(&flows, "rolling", &ch).await;
        let (new, previous) = flows.roll_api_key(&keyward::Actor::System, &old.id, "ops", Some(3600)).await.unwrap();
        assert_eq!((new.key.title.as_str(), new.key.key_type), ("rolling", ApiKeyType::Publishable));
        assert_eq!(new.key.created_by, "ops");
        assert_eq!(channels_of(&flows, &new.key.id).await, [ch]);
        assert_eq!(previous.revoked_by.as_deref(), Some("ops"));
        let at = previous.revoked_at.unwrap();
        assert!(at > flows.kw().now(), "the old key works through its grace period");
        assert_eq!(flows.kw().verify(new.token.expose()).await.unwrap().code, VerifyCode::Valid);
    }

    async fn a_guarded_revoke_refuses_a_key_renamed_or_relinked_since_its_shape_was_read(flows, store) {
        use keyward::store::{Blocked, KeyShape, RevokeOnce};
        let (eu, us) = (channel(&flows, "EU").await, channel(&flows, "US").await);
        let (key, token) = linked_key(&flows, "rolling", &eu).await;
        async fn revoke(store: &std::sync::Arc<dyn keyward::Store>, flows: &Workflows, id: &ApiKeyId, shape: KeyShape) -> Result<(), Blocked> {
            let now = flows.kw().now();
            let once = RevokeOnce::Any;
            store
                .revoke_api_keys(std::slice::from_ref(id), "ops", now, &keyward::SystemClock, once, Some(&shape), false)
                .await
                .unwrap()
        }
        let shape = |title: &str, channels: &[&SalesChannelId]| KeyShape {
            title: title.to_owned(),
            channels: channels.iter().map(|c| (*c).clone()).collect(),
            terms: None,
        };
        // Renamed since: refused, nothing written.
        let changed = Err(Blocked::Changed(key.id.clone()));
        assert_eq!(revoke(&store, &flows, &key.id, shape("before the rename", &[&eu])).await, changed);
        // Linked to another channel since (or a link removed): refused too.
        let mut both = [&eu, &us];
        both.sort();
        assert_eq!(revoke(&store, &flows, &key.id, shape("rolling", &both)).await, changed);
        assert_eq!(revoke(&store, &flows, &key.id, shape("rolling", &[])).await, changed);
        // Its expiry or policy changed since (the successor would carry the old ones): refused.
        let mut stale = shape("rolling", &[&eu]);
        let meta: keyward::Metadata = [("team".to_owned(), serde_json::json!("web"))].into_iter().collect();
        let policy = keyward::KeyPolicy { metadata: Some(Box::new(meta)), ..Default::default() };
        stale.terms = Some(keyward::store::KeyTerms { expires_at: None, policy });
        assert_eq!(revoke(&store, &flows, &key.id, stale).await, changed);
        assert_eq!(flows.kw().verify(&token).await.unwrap().code, VerifyCode::Valid, "nothing was revoked");
        // The shape as it is: revoked.
        assert_eq!(revoke(&store, &flows, &key.id, shape("rolling", &[&eu])).await, Ok(()));
        assert_eq!(flows.kw().verify(&token).await.unwrap().code, VerifyCode::Revoked);
    }

    async fn a_failed_delete_puts_the_keys_and_their_links_back(flows) {
        let ch = channel(&flows, "EU").await;
        let (key, token) = linked_key(&flows, "to delete", &ch).await;
        flows.revoke_api_key(&keyward::Actor::System, &key.id, &RevokeApiKey { revoked_by: "t".into(), revoke_in: None }).await.unwrap();
        let input = DeleteApiKeysInput { ids: vec![key.id.clone()], actor: Default::default() };
        run_then_fail(&flows, workflows::delete_api_keys_workflow(), input).await;
        let back = flows.kw().retrieve_api_key(&key.id).await.unwrap();
        assert_eq!((back.created_at, back.title.as_str()), (key.created_at, "to delete"));
        assert_eq!(channels_of(&flows, &key.id).await, [ch]);
        let v = flows.kw().verify(&token).await.unwrap();
        assert_eq!(v.code, VerifyCode::Revoked, "the same stored token came back");
    }

    async fn a_failed_link_change_restores_the_channels(flows) {
        let (a, b) = (channel(&flows, "a").await, channel(&flows, "b").await);
        let (key, _) = linked_key(&flows, "linked", &a).await;
        let input = LinkSalesChannelsInput { id: key.id.clone(), add: vec![b.clone()], remove: vec![a.clone()], actor: Default::default() };
        run_then_fail(&flows, workflows::link_sales_channels_workflow(), input).await;
        assert_eq!(channels_of(&flows, &key.id).await, std::slice::from_ref(&a));
        flows.link_sales_channels(&keyward::Actor::System, &key.id, std::slice::from_ref(&b), std::slice::from_ref(&a)).await.unwrap();
        assert_eq!(channels_of(&flows, &key.id).await, [b]);
    }

    async fn failed_updates_and_revocations_put_the_old_values_back(flows) {
        let key = flows
            .create_api_key(&keyward::Actor::System, CreateApiKey::new("before", ApiKeyType::Secret, "t"))
            .await
            .unwrap()
            .key;
        let later = keyward::ClockExt::now(&keyward::SystemClock).plus_seconds(3_600);
        let update = keyward::UpdateApiKey { title: Some("after".into()), expires_at: Some(Some(later)), ..Default::default() };
        let input = UpdateApiKeysInput { ids: vec![key.id.clone()], update, actor: Default::default() };
        run_then_fail(&flows, workflows::update_api_keys_workflow(), input).await;
        assert_eq!(flows.kw().retrieve_api_key(&key.id).await.unwrap().expires_at, None, "the expiry is put back too");
        let input = RevokeApiKeysInput { ids: vec![key.id.clone()], revoked_by: "ops".into(), revoke_in: Some(60), actor: Default::default() };
        run_then_fail(&flows, workflows::revoke_api_keys_workflow(), input).await;
        let back = flows.kw().retrieve_api_key(&key.id).await.unwrap();
        assert_eq!((back.title.as_str(), back.revoked_at, back.revoked_by), ("before", None, None));
        // A revocation that took effect stays: the compensation reports it instead.
        let input = RevokeApiKeysInput { ids: vec![key.id.clone()], revoked_by: "ops".into(), revoke_in: None, actor: Default::default() };
        let conflicts = run_then_fail(&flows, workflows::revoke_api_keys_workflow(), input).await;
        assert_eq!(conflicts.len(), 1, "{conflicts:?}");
        assert!(flows.kw().retrieve_api_key(&key.id).await.unwrap().revoked_at.is_some());
    }

    async fn a_compensation_leaves_alone_what_another_change_wrote_since(flows) {
        let key = flows.create_api_key(&keyward::Actor::System, CreateApiKey::new("first", ApiKeyType::Secret, "t")).await.unwrap().key;
        // A title change whose later step fails after someone else renamed the key meanwhile.
        let (ours, theirs) = (keyward::UpdateApiKey::title("mine"), keyward::UpdateApiKey::title("theirs"));
        let run = update_undone_after(&flows, &key.id, ours, Some(theirs)).await;
        assert_eq!(flows.kw().retrieve_api_key(&key.id).await.unwrap().title, "theirs", "not overwritten by the undo");
        let conflict = run.errors.iter().find(|f| f.handler == keyward_flow::Handler::Conflict).expect("a conflict");
        assert!(conflict.error.message().contains("theirs"), "{}", conflict.error.message());
    }

    async fn an_undone_expiry_leaves_alone_the_expiry_another_change_wrote_since(flows) {
        let key = flows.create_api_key(&keyward::Actor::System, CreateApiKey::new("k", ApiKeyType::Secret, "t")).await.unwrap().key;
        let now = keyward::ClockExt::now(&keyward::SystemClock);
        let (ours, theirs) = (now.plus_seconds(3_600), now.plus_seconds(7_200));
        let at = |t| keyward::UpdateApiKey { expires_at: Some(Some(t)), ..Default::default() };
        let run = update_undone_after(&flows, &key.id, at(ours), Some(at(theirs))).await;
        assert_eq!(flows.kw().retrieve_api_key(&key.id).await.unwrap().expires_at, Some(theirs), "not overwritten by the undo");
        assert!(run.errors.iter().any(|f| f.handler == keyward_flow::Handler::Conflict), "{:?}", run.errors);
    }

    async fn an_undone_policy_change_puts_back_the_old_one_unless_another_change_wrote_since(flows) {
        let block = |s: &str| vec![keyward::Cidr::parse(s).unwrap()];
        let meta = |team: &str| -> keyward::Metadata { [("team".to_owned(), serde_json::json!(team))].into_iter().collect() };
        let mut data = CreateApiKey::new("k", ApiKeyType::Secret, "t");
        data.policy = keyward::KeyPolicy { metadata: Some(Box::new(meta("before"))), allowed_ips: Some(block("192.0.2.0/24")), permissions: None };
        let key = flows.create_api_key(&keyward::Actor::System, data).await.unwrap().key;
        let ours = keyward::UpdateApiKey {
            metadata: Some(Some(meta("ours"))),
            allowed_ips: Some(Some(block("198.51.100.0/24"))),
            ..Default::default()
        };
        // A run that fails on its own puts the old policy back.
        update_undone_after(&flows, &key.id, ours.clone(), None).await;
        assert_eq!(flows.kw().retrieve_api_key(&key.id).await.unwrap().policy, key.policy, "put back");
        // One whose key another writer changed meanwhile leaves that writer's addresses alone.
        let theirs = keyward::UpdateApiKey { allowed_ips: Some(Some(block("203.0.113.0/24"))), ..Default::default() };
        let run = update_undone_after(&flows, &key.id, ours, Some(theirs)).await;
        let now = flows.kw().retrieve_api_key(&key.id).await.unwrap();
        assert_eq!(now.policy.allowed_ips, Some(block("203.0.113.0/24")), "not overwritten by the undo");
        assert!(run.errors.iter().any(|f| f.handler == keyward_flow::Handler::Conflict), "{:?}", run.errors);
    }

    async fn the_module_rules_come_back_with_their_exact_messages(flows) {
        let key = flows.create_api_key(&keyward::Actor::System, CreateApiKey::new("live", ApiKeyType::Secret, "t")).await.unwrap().key;
        let err = flows.delete_api_keys(&keyward::Actor::System, std::slice::from_ref(&key.id)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotAllowed);
        assert_eq!(err.message, format!("Cannot delete api keys that are not revoked - {}", key.id));
        let by = RevokeApiKey { revoked_by: "t".into(), revoke_in: None };
        flows.revoke_api_key(&keyward::Actor::System, &key.id, &by).await.unwrap();
        let err = flows.revoke_api_key(&keyward::Actor::System, &key.id, &by).await.unwrap_err();
        assert_eq!(err.message, "There are 1 secret keys that are already revoked.");
        let err = flows.roll_api_key(&keyward::Actor::System, &key.id, "t", None).await.unwrap_err();
        assert_eq!(err.message, "There are 1 secret keys that are already revoked.");
        let missing = ApiKeyId::parse("apk_missing").unwrap();
        let err = flows.update_api_key(&keyward::Actor::System, &missing, "x").await.unwrap_err();
        assert_eq!((err.kind, err.message.as_str()), (ErrorKind::NotFound, "ApiKey with id: apk_missing was not found"));
        let err = flows
            .link_sales_channels(&keyward::Actor::System, &key.id, &[SalesChannelId::parse("sc_nope").unwrap()], &[])
            .await
            .unwrap_err();
        assert_eq!(err.message, "Sales channels can only be associated with publishable API keys");
        let failed = flows.engine().log().list_runs(Some(RunState::Reverted), 50).await.unwrap();
        assert!(failed.iter().any(|r| r.workflow == "delete-api-keys"), "refusals are recorded as reverted runs");
    }

    async fn the_api_keys_created_hook_gets_the_new_keys_and_takes_one_handler(flows) {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let handler = {
            let seen = seen.clone();
            Step::new("remember", move |input: ApiKeysCreated, _cx: StepContext<Keyward>| {
                let seen = seen.clone();
                async move {
                    seen.lock().unwrap().extend(input.api_keys.into_iter().map(|k| k.title));
                    Ok(StepResponse::new(()))
                }
            })
        };
        flows.engine().attach_hook("create-api-keys", "api_keys_created", handler.clone()).unwrap();
        assert!(flows.engine().attach_hook("create-api-keys", "api_keys_created", handler).is_err());
        flows
            .create_api_keys(&keyward::Actor::System, vec![
                CreateApiKey::new("one", ApiKeyType::Publishable, "t"),
                CreateApiKey::new("two", ApiKeyType::Secret, "t"),
            ])
            .await
            .unwrap();
        assert_eq!(*seen.lock().unwrap(), ["one", "two"]);
    }

    async fn failed_sales_channel_changes_are_undone(flows) {
        let ch = flows
            .create_sales_channel(&keyward::Actor::System, CreateSalesChannel {
                name: "EU".into(),
                description: Some("Europe".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let (key, _) = linked_key(&flows, "eu storefront", &ch.id).await;

        let patch = UpdateSalesChannel { name: Some("EU2".into()), description: Some(None), ..Default::default() };
        let input = UpdateSalesChannelInput { id: ch.id.clone(), patch };
        run_then_fail(&flows, workflows::update_sales_channels_workflow(), input).await;
        let back = flows.kw().retrieve_sales_channel(&ch.id).await.unwrap();
        assert_eq!((back.name.as_str(), back.description.as_deref()), ("EU", Some("Europe")));

        run_then_fail(&flows, workflows::delete_sales_channels_workflow(), vec![ch.id.clone()]).await;
        assert_eq!(flows.kw().retrieve_sales_channel(&ch.id).await.unwrap().name, "EU");
        assert_eq!(channels_of(&flows, &key.id).await, std::slice::from_ref(&ch.id), "the link came back too");

        let new = vec![CreateSalesChannel { name: "doomed".into(), ..Default::default() }];
        run_then_fail(&flows, workflows::create_sales_channels_workflow(), new).await;
        let all = flows.kw().list_sales_channels(&Default::default(), &Default::default()).await.unwrap();
        assert!(all.iter().all(|c| c.name != "doomed"));

        // And done for real, a null clears the description.
        let patch = UpdateSalesChannel { description: Some(None), ..Default::default() };
        assert_eq!(flows.update_sales_channel(&keyward::Actor::System, &ch.id, &patch).await.unwrap().description, None);
        flows.delete_sales_channels(&keyward::Actor::System, std::slice::from_ref(&ch.id)).await.unwrap();
        assert!(channels_of(&flows, &key.id).await.is_empty());
    }

    async fn a_roll_publishes_its_events_together_and_a_failed_one_publishes_none(flows) {
        let ch = channel(&flows, "EU").await;
        let (old, _) = linked_key(&flows, "rolling", &ch).await;
        let before = flows.engine().log().list_events(100).await.unwrap().len();
        let input = RollApiKeyInput { id: old.id.clone(), rolled_by: "ops".into(), revoke_in: Some(3600), actor: Default::default() };
        run_then_fail(&flows, workflows::roll_api_key_workflow(), input).await;
        assert_eq!(flows.engine().log().list_events(100).await.unwrap().len(), before);
        let (new, _) = flows.roll_api_key(&keyward::Actor::System, &old.id, "ops", None).await.unwrap();
        let mut events = flows.engine().log().list_events(100).await.unwrap();
        events.truncate(events.len() - before);
        events.reverse();
        let names: Vec<&str> = events.iter().map(|(e, _)| e.name.as_str()).collect();
        assert_eq!(names, ["api_key.created", "api_key.updated", "api_key.revoked", "api_key.rolled"]);
        let group = &events[0].0.metadata["event_group_id"];
        assert!(events.iter().all(|(e, _)| &e.metadata["event_group_id"] == group));
        assert_eq!(events[0].0.data["id"], new.key.id.as_str());
        assert_eq!(events[3].0.data, serde_json::json!({"id": new.key.id, "previous_id": old.id}));
    }

    async fn every_workflow_publishes_the_events_its_docs_promise(flows, store) {
        /// An import of a channel and a linked key, then an update that renames the channel
        /// and brings a revocation.
        async fn import_twice(flows: &keyward::Workflows) {
            use keyward::import::{ImportInput, ImportSet, MedusaChannel, MedusaKey, MedusaLink, MedusaSnapshot};
            let at = keyward::Timestamp::parse("2020-06-01T00:00:00Z").unwrap();
            let token = "pk_ae4bbd495a26f8e6ae492c3470cc47879010b6d8e83b8a40fdd640c175589b59";
            let mut source = MedusaSnapshot {
                keys: vec![MedusaKey {
                    id: "apk_01MEDUSA".into(), token: token.into(), salt: String::new(),
                    redacted: keyward::token::redact(token), title: "shop".into(), key_type: "publishable".into(),
                    last_used_at: None, created_by: String::new(), created_at: at, revoked_by: None,
                    revoked_at: None, updated_at: at,
                }],
                channels: vec![MedusaChannel {
                    id: "sc_01MEDUSA".into(), name: "web".into(), description: None, is_disabled: false,
                    metadata: None, created_at: at, updated_at: at,
                }],
                links: vec![MedusaLink { publishable_key_id: "apk_01MEDUSA".into(), sales_channel_id: "sc_01MEDUSA".into() }],
                ..Default::default()
            };
            let set = ImportSet::from_medusa(source.clone()).unwrap();
            flows.import_medusa(ImportInput { set, update: false }, "events-import-1").await.unwrap();
            source.channels[0].name = "web shop".into();
            source.keys[0].revoked_at = Some(at);
            source.keys[0].revoked_by = Some("medusa".into());
            let set = ImportSet::from_medusa(source).unwrap();
            let report = flows.import_medusa(ImportInput { set, update: true }, "events-import-2").await.unwrap();
            assert_eq!((report.api_keys.updated, report.sales_channels.updated), (1, 1), "{report:?}");
        }

        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/events-and-jobs.md")).unwrap();
        let mut promised: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
        let table = docs.split("What each workflow publishes").nth(1).unwrap().split("\n\n").nth(1).unwrap();
        for line in table.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let names = cells[2].split('`').skip(1).step_by(2).map(str::to_owned).collect();
            promised.insert(cells[1].trim_matches('`').to_owned(), names);
        }
        for names in promised.values() {
            assert!(names.iter().all(|n| keyward::EventName::parse(n).is_some()), "{names:?}");
        }
        // Run each of them once.
        let ch = flows
            .create_sales_channel(&keyward::Actor::System, CreateSalesChannel { name: "EU".into(), ..Default::default() })
            .await
            .unwrap()
            .id;
        let (key, _) = linked_key(&flows, "k", &ch).await;
        flows.update_api_key(&keyward::Actor::System, &key.id, "renamed").await.unwrap();
        flows.roll_api_key(&keyward::Actor::System, &key.id, "ops", Some(60)).await.unwrap();
        let by = RevokeApiKey { revoked_by: "t".into(), revoke_in: None };
        flows.revoke_api_key(&keyward::Actor::System, &key.id, &by).await.unwrap();
        flows.delete_api_keys(&keyward::Actor::System, std::slice::from_ref(&key.id)).await.unwrap();
        let patch = UpdateSalesChannel { name: Some("EU 2".into()), ..Default::default() };
        flows.update_sales_channel(&keyward::Actor::System, &ch, &patch).await.unwrap();
        flows.delete_sales_channels(&keyward::Actor::System, std::slice::from_ref(&ch)).await.unwrap();
        flows.create_user("events@test.local", "long enough").await.unwrap();
        import_twice(&flows).await;
        // A key that expires within the warning, and one whose instant has passed.
        let mut soon = CreateApiKey::new("soon", ApiKeyType::Secret, "t");
        soon.expires_in = Some(3_600);
        flows.create_api_key(&keyward::Actor::System, soon).await.unwrap();
        let past = keyward::ClockExt::now(&keyward::SystemClock).plus_seconds(-1);
        let token = keyward::token::from_random_bytes(ApiKeyType::Secret, &[9; 32]);
        let expired = keyward::store::NewApiKey {
            id: ApiKeyId::parse("apk_expired").unwrap(), token: token.digest(), salt: String::new(),
            redacted: token.redacted(), title: "expired".into(), key_type: ApiKeyType::Secret, created_by: "t".into(),
            created_at: past.plus_seconds(-60), expires_at: Some(past), policy: Default::default(),
        };
        store.insert_api_keys(&[expired]).await.unwrap();
        flows.notify_api_key_expiry(workflows::DEFAULT_EXPIRY_WARNING).await.unwrap();
        let mut published: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
        for (event, _) in flows.engine().log().list_events(1000).await.unwrap() {
            let workflow = event.metadata["workflow"].as_str().unwrap().to_owned();
            published.entry(workflow).or_default().insert(event.name.clone());
        }
        let registered: std::collections::BTreeSet<String> = flows.engine().workflow_names().into_iter().collect();
        assert_eq!(registered, promised.keys().cloned().collect(), "the table names every workflow");
        assert_eq!(published, promised);
    }

    async fn the_key_for_a_new_user_is_made_once_even_when_the_first_delivery_fails(flows) {
        let attempts = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let subscriber = {
            let (flows, attempts) = (flows.clone(), attempts.clone());
            Subscriber::new("test:key-on-user-created", &["user.created"], move |event: Event, _kw| {
                let (flows, attempts) = (flows.clone(), attempts.clone());
                async move {
                    keyward::builtins::create_key_for_user(&flows, ApiKeyType::Secret, &event).await?;
                    if attempts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        return Err(StepError::new("the acknowledgement was lost"));
                    }
                    Ok(())
                }
            })
        };
        flows.engine().subscribe(subscriber).unwrap();
        flows.engine().register_subscribers().await.unwrap();
        let user = flows.create_user("someone@test.local", "supersecret").await.unwrap();
        let options = DeliveryOptions { backoff: std::time::Duration::from_millis(20), ..DeliveryOptions::default() };
        let start = std::time::Instant::now();
        while attempts.load(std::sync::atomic::Ordering::SeqCst) < 2 {
            assert!(start.elapsed() < std::time::Duration::from_secs(10), "no second attempt");
            flows.engine().deliver_due(&options).await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let keys = flows.kw().list_api_keys(&Default::default(), &Default::default()).await.unwrap();
        let theirs: Vec<_> = keys.iter().filter(|k| k.created_by == user.id.as_str()).collect();
        assert_eq!(theirs.len(), 1, "{theirs:?}");
        assert_eq!(theirs[0].key_type, ApiKeyType::Secret);
    }
}

async fn purging_deletes_only_keys_revoked_long_enough_ago(h: keyward_testkit::Harness) {
    let flows = &h.flows;
    let old = flows
        .create_api_key(
            &keyward::Actor::System,
            CreateApiKey::new("old", ApiKeyType::Secret, "t"),
        )
        .await
        .unwrap()
        .key;
    let recent = flows
        .create_api_key(
            &keyward::Actor::System,
            CreateApiKey::new("recent", ApiKeyType::Secret, "t"),
        )
        .await
        .unwrap()
        .key;
    let live = flows
        .create_api_key(
            &keyward::Actor::System,
            CreateApiKey::new("live", ApiKeyType::Publishable, "t"),
        )
        .await
        .unwrap()
        .key;
    let by = RevokeApiKey {
        revoked_by: "t".into(),
        revoke_in: None,
    };
    flows
        .revoke_api_key(&keyward::Actor::System, &old.id, &by)
        .await
        .unwrap();
    h.clock.advance_seconds(10 * 86_400);
    flows
        .revoke_api_key(&keyward::Actor::System, &recent.id, &by)
        .await
        .unwrap();
    h.clock.advance_seconds(86_400);
    let purged = flows
        .purge_revoked(std::time::Duration::from_secs(7 * 86_400))
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert_eq!(
        h.kw.retrieve_api_key(&old.id).await.unwrap_err().kind,
        ErrorKind::NotFound
    );
    h.kw.retrieve_api_key(&recent.id).await.unwrap();
    h.kw.retrieve_api_key(&live.id).await.unwrap();
    let job = keyward::builtins::purge_revoked_keys(flows, 7).unwrap();
    assert_eq!(job.name(), "keyward:purge-revoked-keys");
}

#[tokio::test]
async fn purging_on_sqlite() {
    purging_deletes_only_keys_revoked_long_enough_ago(keyward_testkit::Harness::sqlite().await).await;
}

#[tokio::test]
async fn purging_on_postgres() {
    let h = keyward_testkit::Harness::postgres().await;
    purging_deletes_only_keys_revoked_long_enough_ago(h).await;
}
