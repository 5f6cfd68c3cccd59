//! `keyward keys …`: one function per subcommand.

use keyward::{
    ApiKeyField, ApiKeyFilter, ApiKeyId, ApiKeyType, CreateApiKey, ListOptions, Op, RevokeApiKey, SalesChannelId,
    Value, Workflows,
};
use serde_json::json;

use crate::{
    Failure, Idempotent, KeysCommand, ListKeys, Outcome, UpdateKey, create_many, describe_key, finish_idempotent,
    idempotent, import, key_id, non_empty_title, released_on_error, show_key, status, table, usage, verification,
};

pub(crate) async fn keys(flows: &Workflows, cmd: KeysCommand, json: bool) -> Result<Outcome, Failure> {
    let kw = flows.kw();
    match cmd {
        KeysCommand::Create {
            title,
            key_type,
            created_by,
            idempotency_key,
            count,
            expires_in,
            expires_at,
            policy,
        } => {
            non_empty_title(&title)?;
            if let Some(count) = count {
                return create_many(flows, &title, key_type.into(), &created_by, count, json).await;
            }
            let mut key = CreateApiKey::new(title, key_type.into(), created_by);
            (key.expires_in, key.expires_at) = (expires_in, expires_at);
            key.policy = policy.into_policy();
            create(flows, key, idempotency_key, json).await
        }
        KeysCommand::List(args) => list(flows, args, json).await,
        KeysCommand::Get { id } => {
            let key = kw.retrieve_api_key(&key_id(&id)?).await?;
            Ok(Outcome::ok(show_with_channels(flows, &key, json).await?))
        }
        KeysCommand::Update(args) => update(flows, args, json).await,
        KeysCommand::Revoke {
            id,
            revoke_in,
            revoked_by,
        } => {
            let revoke = RevokeApiKey { revoked_by, revoke_in };
            let key = flows
                .revoke_api_key(&keyward::Actor::System, &key_id(&id)?, &revoke)
                .await?;
            Ok(Outcome::ok(show_key(&key, &[], json)))
        }
        KeysCommand::Roll {
            id,
            grace,
            rolled_by,
            idempotency_key,
        } => roll(flows, id, grace, rolled_by, idempotency_key, json).await,
        KeysCommand::Link { id, add, remove } => link(flows, &id, &add, &remove, json).await,
        KeysCommand::Delete { id } => delete(flows, &id, json).await,
        KeysCommand::Verify {
            token,
            from,
            permissions,
        } => {
            let mut verdict = kw.verify_from(&token, from).await?;
            if let Some(q) = &permissions {
                verdict = verdict.requiring(q);
            }
            // The use is stamped now: this process ends before a flush would come.
            kw.flush_usage().await?;
            Ok(verification(&verdict, json))
        }
        KeysCommand::Import {
            from_medusa,
            dry_run,
            update,
        } => import::import(flows, import::ImportArgs::new(from_medusa, dry_run, update, json)).await,
    }
}

/// `keys update`: the flags as one change of the key.
async fn update(flows: &Workflows, args: UpdateKey, json: bool) -> Result<Outcome, Failure> {
    if let Some(title) = &args.title {
        non_empty_title(title)?;
    }
    let expires_at = match (args.expires_in, args.expires_at, args.no_expiry) {
        (Some(seconds), _, _) => Some(Some(keyward::expiry_in(flows.kw().now(), seconds)?)),
        (None, Some(at), _) => Some(Some(at)),
        (None, None, true) => Some(None),
        (None, None, false) => None,
    };
    let set = args.policy.into_policy();
    let update = keyward::UpdateApiKey {
        title: args.title,
        expires_at,
        metadata: if args.no_metadata {
            Some(None)
        } else {
            set.metadata.map(|m| Some(*m))
        },
        permissions: set.permissions,
        allowed_ips: if args.any_ip {
            Some(None)
        } else {
            set.allowed_ips.map(Some)
        },
    };
    let key = flows
        .update_api_key_with(&keyward::Actor::System, &key_id(&args.id)?, &update)
        .await?;
    Ok(Outcome::ok(show_key(&key, &[], json)))
}

/// `keys delete`: an unknown id is a no-op in the module; from a terminal it is a typo, refused.
async fn delete(flows: &Workflows, id: &str, json: bool) -> Result<Outcome, Failure> {
    let id = key_id(id)?;
    flows.kw().retrieve_api_key(&id).await?;
    flows
        .delete_api_keys(&keyward::Actor::System, std::slice::from_ref(&id))
        .await?;
    Ok(Outcome::ok(if json {
        format!("{}\n", json!({"id": id, "object": "api_key", "deleted": true}))
    } else {
        format!("deleted {id}\n")
    }))
}

/// `keys create` (one key): the token printed this once; at most once per idempotency key.
async fn create(
    flows: &Workflows,
    key: CreateApiKey,
    idempotency_key: Option<String>,
    json: bool,
) -> Result<Outcome, Failure> {
    let mut request = json!(["keys create", key.title, key.key_type.as_str(), json]);
    // A request without an expiry keeps the fingerprint it had before expiries existed.
    if key.expires_in.is_some() || key.expires_at.is_some() {
        request = json!([request, key.expires_in, key.expires_at]);
    }
    let claim = match idempotent(flows, idempotency_key.as_deref(), &key.created_by, &request).await? {
        Idempotent::Replay(outcome) => return Ok(outcome),
        Idempotent::Run(claim) => claim,
    };
    let made = flows.create_api_key(&keyward::Actor::System, key).await;
    let created = released_on_error(flows, &claim, made).await?;
    let text = if json {
        format!("{}\n", json!({ "api_key": created }))
    } else {
        let mut s = describe_key(&created.key);
        s.push_str(&format!("token:        {}\n", created.token.expose()));
        if created.key.key_type == ApiKeyType::Secret {
            s.push_str("\nThis is the only time the secret token is shown. Store it now.\n");
        }
        s
    };
    finish_idempotent(flows, claim, Outcome::ok(text)).await
}

/// `keys list`: a page of keys, and how many imported keys still wait for their first use.
async fn list(flows: &Workflows, args: ListKeys, json: bool) -> Result<Outcome, Failure> {
    let kw = flows.kw();
    let mut filter = ApiKeyFilter::new();
    if let Some(t) = args.key_type {
        filter.push(ApiKeyField::Type, Op::Eq, vec![ApiKeyType::from(t).as_str().into()])?;
    }
    if args.revoked {
        filter.push(ApiKeyField::RevokedAt, Op::Ne, vec![Value::Null])?;
    }
    if let Some(q) = args.q {
        filter = filter.with_q(q);
    }
    for (name, value) in &args.metadata {
        filter.push_metadata(name, value.as_str())?;
    }
    let (list, count) = kw
        .list_and_count_api_keys(&filter, &ListOptions::page(args.offset, args.limit))
        .await?;
    let legacy = kw.count_legacy_secret_keys().await?;
    if json {
        return Ok(Outcome::ok(format!(
            "{}\n",
            json!({"api_keys": list, "count": count, "offset": args.offset, "limit": args.limit,
                   "legacy_secret_keys": legacy})
        )));
    }
    let now = kw.now();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|k| {
            vec![
                k.id.to_string(),
                k.key_type.to_string(),
                k.redacted.clone(),
                status(k, now),
                k.title.clone(),
            ]
        })
        .collect();
    let mut s = table::render(&["ID", "TYPE", "REDACTED", "STATUS", "TITLE"], &rows);
    s.push_str(&format!("{} of {count} keys\n", list.len()));
    if legacy > 0 {
        s.push_str(&format!(
            "{legacy} secret keys imported from Medusa wait for their first use \
             (until then each costs one scrypt check)\n"
        ));
    }
    Ok(Outcome::ok(s))
}

/// `keys roll`: the new token printed this once; at most once per idempotency key.
async fn roll(
    flows: &Workflows,
    id: String,
    grace: Option<i64>,
    rolled_by: String,
    idempotency_key: Option<String>,
    json: bool,
) -> Result<Outcome, Failure> {
    let request = json!(["keys roll", id, grace, json]);
    let id = key_id(&id)?;
    let claim = match idempotent(flows, idempotency_key.as_deref(), &rolled_by, &request).await? {
        Idempotent::Replay(outcome) => return Ok(outcome),
        Idempotent::Run(claim) => claim,
    };
    let rolled = flows
        .roll_api_key(&keyward::Actor::System, &id, &rolled_by, grace)
        .await;
    let (created, previous) = released_on_error(flows, &claim, rolled).await?;
    let text = if json {
        format!("{}\n", json!({"api_key": created, "previous_api_key": previous}))
    } else {
        let mut s = describe_key(&created.key);
        s.push_str(&format!("token:        {}\n", created.token.expose()));
        s.push_str(&format!(
            "\nReplaces {} (revoked at {}). This is the only time the new token is shown.\n",
            previous.id,
            previous.revoked_at.map(|t| t.to_string()).unwrap_or_default()
        ));
        s
    };
    finish_idempotent(flows, claim, Outcome::ok(text)).await
}

/// `keys link`: adds and removes a publishable key's channels; shows the key as it is then.
async fn link(flows: &Workflows, id: &str, add: &[String], remove: &[String], json: bool) -> Result<Outcome, Failure> {
    let id: ApiKeyId = key_id(id)?;
    if add.is_empty() && remove.is_empty() {
        return Err(usage("give at least one --add or --remove"));
    }
    let channels = |ids: &[String]| -> Result<Vec<SalesChannelId>, Failure> {
        ids.iter()
            .map(|c| SalesChannelId::parse(c).map_err(|e| usage(format!("{c:?} is not a sales channel id: {e}"))))
            .collect()
    };
    flows
        .link_sales_channels(&keyward::Actor::System, &id, &channels(add)?, &channels(remove)?)
        .await?;
    let key = flows.kw().retrieve_api_key(&id).await?;
    Ok(Outcome::ok(show_with_channels(flows, &key, json).await?))
}

/// A key with its sales channels, as `keys get` shows it.
async fn show_with_channels(flows: &Workflows, key: &keyward::ApiKey, json: bool) -> Result<String, Failure> {
    let linked = flows.kw().sales_channels_of(std::slice::from_ref(&key.id)).await?;
    Ok(show_key(
        key,
        linked.get(&key.id).map(Vec::as_slice).unwrap_or_default(),
        json,
    ))
}
