//! Shared by the key commands: id and title checks, `keys create --count`, and how keys and
//! verdicts are printed.

use std::process::ExitCode;

use keyward::{ApiKey, ApiKeyId, ApiKeyType, CreateApiKey, SalesChannel, Verification, Workflows};
use serde_json::json;

use super::{Failure, Outcome, usage};

pub(crate) fn key_id(id: &str) -> Result<ApiKeyId, Failure> {
    ApiKeyId::parse(id).map_err(|e| usage(format!("{id:?} is not a key id: {e}")))
}

pub(crate) fn non_empty_title(title: &str) -> Result<(), Failure> {
    if title.trim().is_empty() {
        Err(usage("--title must not be empty"))
    } else {
        Ok(())
    }
}

/// Keys created per workflow run by `keys create --count`.
pub(crate) const CREATE_BATCH: u32 = 1_000;

/// `keys create --count N`: batches through the create workflow, each line printed as its batch
/// lands (so an interrupted run has printed every key it made), a progress bar on stderr.
pub(crate) async fn create_many(
    flows: &Workflows,
    title: &str,
    key_type: ApiKeyType,
    created_by: &str,
    count: u32,
    json: bool,
) -> Result<Outcome, Failure> {
    use std::io::Write as _;
    let bar = indicatif::ProgressBar::new(u64::from(count));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} keys  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let mut made = 0;
    while made < count {
        let batch = (count - made).min(CREATE_BATCH);
        let input = (made + 1..=made + batch)
            .map(|i| CreateApiKey::new(format!("{title} {i}"), key_type, created_by))
            .collect();
        let created = flows.create_api_keys(&keyward::Actor::System, input).await?;
        let mut lines = String::new();
        for c in &created {
            if json {
                lines.push_str(&json!({ "api_key": c }).to_string());
            } else {
                lines.push_str(&format!("{} {}", c.key.id, c.token.expose()));
            }
            lines.push('\n');
        }
        let mut stdout = std::io::stdout();
        stdout
            .write_all(lines.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|e| Failure::Refused(keyward::Error::unavailable(format!("cannot write the tokens: {e}"))))?;
        made += batch;
        bar.inc(u64::from(batch));
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "created {count} keys in {seconds:.1} s ({:.0} keys/s)",
        f64::from(count) / seconds.max(1e-9)
    );
    Ok(Outcome::ok(String::new()))
}

pub(crate) fn verification(v: &Verification, json: bool) -> Outcome {
    let text = if json {
        let mut body = json!({"valid": v.is_valid(), "code": v.code, "sales_channel_ids": v.sales_channel_ids(), "permissions": v.permissions()});
        if let Some(k) = v.key() {
            body["api_key"] = json!(k);
        }
        format!("{body}\n")
    } else {
        let reason = match v.code {
            keyward::VerifyCode::Valid => "valid".to_owned(),
            keyward::VerifyCode::Malformed => {
                "invalid (MALFORMED): not a keyward or Medusa token, or mistyped".to_owned()
            }
            keyward::VerifyCode::NotFound => "invalid (NOT_FOUND): no key has this token".to_owned(),
            keyward::VerifyCode::Revoked => format!(
                "invalid (REVOKED at {})",
                v.key()
                    .and_then(|k| k.revoked_at)
                    .map(|t| t.to_string())
                    .unwrap_or_default()
            ),
            keyward::VerifyCode::Expired => "invalid (EXPIRED)".to_owned(),
            keyward::VerifyCode::ForbiddenOrigin => {
                "invalid (FORBIDDEN_ORIGIN): the key works only from its allowed addresses (give one with --from)"
                    .to_owned()
            }
            keyward::VerifyCode::InsufficientPermissions => format!(
                "invalid (INSUFFICIENT_PERMISSIONS): the key holds {}",
                v.permissions()
                    .map(|p| p.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", "))
                    .unwrap_or_else(|| "no permission".to_owned())
            ),
        };
        match v.key() {
            Some(k) => format!("{reason}: {} key {} \"{}\"\n", k.key_type, k.id, k.title),
            None => format!("{reason}\n"),
        }
    };
    Outcome {
        text,
        code: if v.is_valid() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        },
    }
}

pub(crate) fn status(k: &ApiKey, now: keyward::Timestamp) -> String {
    match (k.revoked_at, k.expires_at) {
        (Some(at), _) if at <= now => "revoked".to_owned(),
        (_, Some(at)) if at <= now => "expired".to_owned(),
        (Some(at), _) => format!("revokes {at}"),
        (None, Some(at)) => format!("expires {at}"),
        (None, None) => "active".to_owned(),
    }
}

pub(crate) fn describe_key(k: &ApiKey) -> String {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let list = |items: Option<Vec<String>>| items.map(|i| i.join(", "));
    let p = &k.policy;
    let mut text = format!(
        "id:           {}\ntitle:        {}\ntype:         {}\nredacted:     {}\ncreated_by:   {}\ncreated_at:   {}\nrevoked_at:   {}\nrevoked_by:   {}\nexpires_at:   {}\nlast_used_at: {}\n",
        k.id,
        k.title,
        k.key_type,
        k.redacted,
        k.created_by,
        k.created_at,
        or_dash(k.revoked_at.map(|t| t.to_string())),
        or_dash(k.revoked_by.clone()),
        or_dash(k.expires_at.map(|t| t.to_string())),
        or_dash(k.last_used_at.map(|t| t.to_string())),
    );
    // keyward's own fields, shown only when set (as in the API's answers).
    let extra = [
        (
            "permissions",
            list(
                p.permissions
                    .as_ref()
                    .map(|ps| ps.iter().map(|x| x.to_string()).collect()),
            ),
        ),
        (
            "allowed_ips",
            list(
                p.allowed_ips
                    .as_ref()
                    .map(|a| a.iter().map(|x| x.to_string()).collect()),
            ),
        ),
        (
            "metadata",
            p.metadata
                .as_deref()
                .map(|m| serde_json::Value::Object(m.clone()).to_string()),
        ),
    ];
    for (name, value) in extra {
        if let Some(value) = value {
            text.push_str(&format!("{:<14}{value}\n", format!("{name}:")));
        }
    }
    text
}

pub(crate) fn show_key(key: &ApiKey, channels: &[SalesChannel], json: bool) -> String {
    if json {
        let mut v = json!(key);
        v["sales_channels"] = json!(
            channels
                .iter()
                .map(|c| json!({"id": c.id, "name": c.name}))
                .collect::<Vec<_>>()
        );
        return format!("{}\n", json!({ "api_key": v }));
    }
    let mut s = describe_key(key);
    if key.key_type == ApiKeyType::Publishable {
        s.push_str(&format!("token:        {}\n", key.token));
        let names: Vec<String> = channels.iter().map(|c| format!("{} ({})", c.name, c.id)).collect();
        s.push_str(&format!(
            "channels:     {}\n",
            if names.is_empty() {
                "-".to_owned()
            } else {
                names.join(", ")
            }
        ));
    }
    s
}
