//! No key gets past what it holds, over a real socket on SQLite and Postgres: a restricted key
//! changes only keys its access covers, and no key (restricted, fenced by `allowed_ips`, or
//! expiring) creates, updates or rolls a secret key into more than it holds, its own record
//! included. The rules are the module's (`keyward::Actor`); these tests hold them to the routes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use crate::support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use reqwest::Method;
use serde_json::{Value, json};
use support::{App, read};

async fn create(app: &App, body: Value) -> Value {
    let (s, created) = app.post("/admin/api-keys", body).await;
    assert_eq!(s, 200, "{created}");
    created["api_key"].clone()
}

/// A request with `token` as the admin credential.
async fn as_key(app: &App, token: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.anon(method, path).header(
        "authorization",
        format!("Basic {}", STANDARD.encode(format!("{token}:"))),
    );
    if let Some(body) = body {
        req = req.json(&body);
    }
    read(req.send().await.unwrap()).await
}

fn path_of(key: &Value) -> String {
    format!("/admin/api-keys/{}", key["id"].as_str().unwrap())
}

fn refused(answer: &(u16, Value), words: &str) {
    assert_eq!(answer.0, 403, "{}", answer.1);
    assert_eq!(answer.1["type"], "forbidden", "{}", answer.1);
    let message = answer.1["message"].as_str().unwrap();
    assert!(message.contains(words), "expected {words:?} in {message:?}");
}

/// How many keys carry `title` (a refused create must leave none).
async fn titled(app: &App, title: &str) -> usize {
    let (_, list) = app.get(&format!("/admin/api-keys?q={title}")).await;
    list["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["title"] == title)
        .count()
}

const EXPIRY: &str = "2099-01-01T00:00:00.000Z";

over_http! {
    async fn a_restricted_writer_changes_only_keys_its_access_covers(app) {
        let writer = create(&app, json!({"title": "writer", "type": "secret", "permissions": ["api_keys:write"]})).await;
        let wk = writer["token"].as_str().unwrap();
        // An unrestricted secret key: neither revoked, rolled, renamed nor deleted by it.
        let victim = app.create_key("victim", "secret").await;
        let vpath = path_of(&victim);
        for (method, path, body) in [
            (Method::POST, format!("{vpath}/revoke"), Some(json!({}))),
            (Method::POST, format!("{vpath}/roll"), Some(json!({}))),
            (Method::POST, vpath.clone(), Some(json!({"title": "renamed"}))),
            (Method::DELETE, vpath.clone(), None),
        ] {
            let answer = as_key(&app, wk, method.clone(), &path, body).await;
            refused(&answer, "is an unrestricted secret key; only users and unrestricted keys change it");
        }
        // Revoked by a user, it is still not the writer's to delete.
        assert_eq!(app.post(&format!("{vpath}/revoke"), json!({})).await.0, 200);
        refused(&as_key(&app, wk, Method::DELETE, &vpath, None).await, "unrestricted secret key");
        let (s, still) = app.get(&vpath).await;
        assert_eq!((s, &still["api_key"]["title"]), (200, &json!("victim")));

        // A restricted key holding something the writer lacks is out of reach as well.
        let wider = create(&app, json!({"title": "wider", "type": "secret", "permissions": ["api_keys:read", "sales_channels:write"]})).await;
        let answer = as_key(&app, wk, Method::POST, &format!("{}/revoke", path_of(&wider)), Some(json!({}))).await;
        refused(&answer, "holds api_keys:read, sales_channels:write, which is wider than this key's api_keys:write");
        let (_, wider_now) = app.get(&path_of(&wider)).await;
        assert_eq!(wider_now["api_key"]["revoked_at"], Value::Null);

        // What it covers it changes, and the record names it.
        let narrower = create(&app, json!({"title": "narrower", "type": "secret", "permissions": ["api_keys:read"]})).await;
        let (s, revoked) = as_key(&app, wk, Method::POST, &format!("{}/revoke", path_of(&narrower)), Some(json!({}))).await;
        assert_eq!(s, 200, "{revoked}");
        assert_eq!(revoked["api_key"]["revoked_by"], writer["id"]);
        assert_eq!(as_key(&app, wk, Method::DELETE, &path_of(&narrower), None).await.0, 200);
        let shop = app.create_key("shop", "publishable").await;
        let (s, revoked) = as_key(&app, wk, Method::POST, &format!("{}/revoke", path_of(&shop)), Some(json!({}))).await;
        assert_eq!((s, &revoked["api_key"]["revoked_by"]), (200, &writer["id"]));
        // What it creates names it too.
        let (s, made) = as_key(&app, wk, Method::POST, "/admin/api-keys", Some(json!({"title": "made", "type": "publishable"}))).await;
        assert_eq!((s, &made["api_key"]["created_by"]), (200, &writer["id"]));
    }

    async fn a_fenced_expiring_key_makes_nothing_beyond_its_fence_or_its_expiry(app) {
        let fenced = create(&app, json!({"title": "fenced", "type": "secret", "allowed_ips": ["127.0.0.1/32"], "expires_at": EXPIRY})).await;
        let fk = fenced["token"].as_str().unwrap();
        let fpath = path_of(&fenced);
        for (title, body, message) in [
            ("free", json!({"type": "secret"}), "allowed_ips (every address) is wider than this key's 127.0.0.1/32"),
            ("wide", json!({"type": "secret", "allowed_ips": ["0.0.0.0/0"], "expires_at": "2098-01-01T00:00:00Z"}),
                "allowed_ips 0.0.0.0/0 is wider than this key's 127.0.0.1/32"),
            ("forever", json!({"type": "secret", "allowed_ips": ["127.0.0.1"]}),
                "expires_at (never) is later than this key's expiry 2099-01-01T00:00:00.000Z"),
            ("later", json!({"type": "secret", "allowed_ips": ["127.0.0.1"], "expires_at": "2099-06-01T00:00:00Z"}),
                "expires_at 2099-06-01T00:00:00.000Z is later than this key's expiry 2099-01-01T00:00:00.000Z"),
        ] {
            let mut body = body;
            body["title"] = json!(title);
            let answer = as_key(&app, fk, Method::POST, "/admin/api-keys", Some(body)).await;
            refused(&answer, message);
            assert_eq!(titled(&app, title).await, 0, "a refused create leaves no key");
        }
        let (s, inside) = as_key(&app, fk, Method::POST, "/admin/api-keys",
            Some(json!({"title": "inside", "type": "secret", "allowed_ips": ["127.0.0.1"], "expires_in": 3600}))).await;
        assert_eq!(s, 200, "{inside}");
        assert_eq!(inside["api_key"]["created_by"], fenced["id"]);
        let (s, _) = as_key(&app, fk, Method::POST, "/admin/api-keys", Some(json!({"title": "kiosk", "type": "publishable"}))).await;
        assert_eq!(s, 200, "a publishable key opens no admin route");

        // Its own record: the fence and the expiry stay, at most narrowed.
        for (body, message) in [
            (json!({"allowed_ips": null}), "allowed_ips (every address) is wider"),
            (json!({"allowed_ips": ["127.0.0.0/8"]}), "allowed_ips 127.0.0.0/8 is wider than this key's 127.0.0.1/32"),
            (json!({"expires_at": null}), "expires_at (never) is later"),
            (json!({"expires_at": "2100-01-01T00:00:00Z"}), "is later than this key's expiry"),
        ] {
            refused(&as_key(&app, fk, Method::POST, &fpath, Some(body)).await, message);
        }
        let (_, own) = app.get(&fpath).await;
        assert_eq!((&own["api_key"]["allowed_ips"], &own["api_key"]["expires_at"]), (&json!(["127.0.0.1/32"]), &json!(EXPIRY)));
        let (s, narrowed) = as_key(&app, fk, Method::POST, &fpath, Some(json!({"expires_at": "2098-01-01T00:00:00Z"}))).await;
        assert_eq!((s, &narrowed["api_key"]["expires_at"]), (200, &json!("2098-01-01T00:00:00.000Z")));

        // Rolling a key without its fence would hand out an unfenced token.
        let open = app.create_key("open", "secret").await;
        refused(&as_key(&app, fk, Method::POST, &format!("{}/roll", path_of(&open)), Some(json!({}))).await,
            "allowed_ips (every address) is wider");
        let (_, open_now) = app.get(&path_of(&open)).await;
        assert_eq!(open_now["api_key"]["revoked_at"], Value::Null, "a refused roll revokes nothing");
        // Its own roll keeps the fence and the expiry.
        let (s, rolled) = as_key(&app, fk, Method::POST, &format!("{fpath}/roll"), Some(json!({}))).await;
        assert_eq!(s, 200, "{rolled}");
        assert_eq!(rolled["api_key"]["allowed_ips"], json!(["127.0.0.1/32"]));
    }

    async fn custom_permissions_are_granted_within_what_a_key_holds_and_checked_by_verify(app) {
        let writer = create(&app, json!({"title": "orders app", "type": "secret", "permissions": ["api_keys:write", "keys:verify", "orders:read", "orders:write"]})).await;
        let wk = writer["token"].as_str().unwrap();
        let (s, reader) = as_key(&app, wk, Method::POST, "/admin/api-keys",
            Some(json!({"title": "reader", "type": "secret", "permissions": ["orders:read"]}))).await;
        assert_eq!(s, 200, "{reader}");
        assert_eq!(reader["api_key"]["permissions"], json!(["orders:read"]));
        refused(&as_key(&app, wk, Method::POST, "/admin/api-keys",
            Some(json!({"title": "refunder", "type": "secret", "permissions": ["refunds:write"]}))).await,
            "permissions refunds:write is wider than this key's");
        // keyward's routes ignore the embedder's permissions: this key reaches none of them.
        let rk = reader["api_key"]["token"].as_str().unwrap();
        assert_eq!(as_key(&app, rk, Method::GET, "/admin/api-keys", None).await.0, 403);
        // The verify API checks a query and lists what the key holds.
        let app = &app;
        let verify = |key: &str, query: &str| {
            let body = json!({"key": key, "permissions": query});
            async move { as_key(app, wk, Method::POST, "/v1/keys/verify", Some(body)).await }
        };
        let query = "orders:read AND (orders:write OR refunds:write)";
        let (s, v) = verify(rk, query).await;
        assert_eq!((s, &v["valid"], &v["code"]), (200, &json!(false), &json!("INSUFFICIENT_PERMISSIONS")), "{v}");
        assert_eq!(v["permissions"], json!(["orders:read"]));
        let (_, v) = verify(rk, "orders:read").await;
        assert_eq!((&v["valid"], &v["code"]), (&json!(true), &json!("VALID")), "{v}");
        let (_, v) = verify(wk, query).await;
        assert_eq!(v["code"], "VALID", "{v}");
        let sk = app.create_key("admin", "secret").await;
        let (_, v) = verify(sk["token"].as_str().unwrap(), query).await;
        assert_eq!((&v["code"], &v["permissions"]), (&json!("VALID"), &Value::Null), "an unrestricted key holds everything");
        let pk = app.create_key("shop", "publishable").await;
        let (_, v) = verify(pk["token"].as_str().unwrap(), "orders:read").await;
        assert_eq!(v["code"], "INSUFFICIENT_PERMISSIONS", "a publishable key holds no permission");
        // A malformed key stays MALFORMED whatever is asked.
        let (_, v) = verify("sk_nothing", "orders:read").await;
        assert_eq!(v["code"], "MALFORMED");
        for bad in ["orders:read AND", "(orders:read", "Orders:Read", "api_keys:admin"] {
            let (s, answer) = verify(rk, bad).await;
            assert_eq!(s, 400, "{bad}: {answer}");
        }
        // Names are checked where they are granted, and bounded.
        for (perms, words) in [
            (json!(["Orders:read"]), "Unknown permission 'Orders:read'"),
            (json!(["orders"]), "Unknown permission 'orders'"),
            (json!((0..101).map(|i| format!("p{i}:x")).collect::<Vec<_>>()), "permissions holds at most 100, but got 101"),
        ] {
            let (s, answer) = app.post("/admin/api-keys", json!({"title": "bad", "type": "secret", "permissions": perms})).await;
            assert_eq!(s, 400, "{answer}");
            assert!(answer["message"].as_str().unwrap().contains(words), "{answer}");
        }
    }

    async fn a_key_brings_a_revocation_forward_but_never_postpones_one(app) {
        let writer = create(&app, json!({"title": "writer", "type": "secret", "permissions": ["api_keys:read", "api_keys:write"]})).await;
        let wk = writer["token"].as_str().unwrap();
        let target = create(&app, json!({"title": "target", "type": "secret", "permissions": ["api_keys:read"]})).await;
        let tpath = path_of(&target);
        let (s, scheduled) = app.post(&format!("{tpath}/revoke"), json!({"revoke_in": 60})).await;
        assert_eq!(s, 200);
        let at = scheduled["api_key"]["revoked_at"].clone();
        for body in [json!({"revoke_in": 315_360_000}), json!({"revoke_in": 61})] {
            let answer = as_key(&app, wk, Method::POST, &format!("{tpath}/revoke"), Some(body)).await;
            refused(&answer, "a key may bring a revocation forward, not postpone it");
        }
        refused(&as_key(&app, wk, Method::POST, &format!("{tpath}/roll"), Some(json!({"revoke_in": 3600}))).await, "not postpone it");
        assert_eq!(app.get(&tpath).await.1["api_key"]["revoked_at"], at, "nothing moved");
        let (s, sooner) = as_key(&app, wk, Method::POST, &format!("{tpath}/revoke"), Some(json!({"revoke_in": 30}))).await;
        assert_eq!(s, 200, "{sooner}");
        // A key cannot rescue itself either, and what it awaits bounds what it makes.
        let (s, _) = app.post(&format!("{}/revoke", path_of(&writer)), json!({"revoke_in": 3600})).await;
        assert_eq!(s, 200);
        refused(&as_key(&app, wk, Method::POST, &format!("{}/revoke", path_of(&writer)), Some(json!({"revoke_in": 7200}))).await,
            "not postpone it");
        refused(&as_key(&app, wk, Method::POST, "/admin/api-keys", Some(json!({"title": "heir", "type": "secret", "permissions": ["api_keys:read"]}))).await,
            "expires_at (never) is later than this key's expiry");
        let (s, heir) = as_key(&app, wk, Method::POST, "/admin/api-keys",
            Some(json!({"title": "heir", "type": "secret", "permissions": ["api_keys:read"], "expires_in": 600}))).await;
        assert_eq!(s, 200, "{heir}");
        // A user sets the instant as Medusa lets it.
        let (s, later) = app.post(&format!("{tpath}/revoke"), json!({"revoke_in": 7200})).await;
        assert_eq!(s, 200, "{later}");
    }

    async fn an_unrestricted_fenced_key_cannot_lift_a_fence(app) {
        let fenced = create(&app, json!({"title": "office", "type": "secret", "allowed_ips": ["127.0.0.0/8"]})).await;
        let fk = fenced["token"].as_str().unwrap();
        refused(&as_key(&app, fk, Method::POST, "/admin/api-keys", Some(json!({"title": "anywhere", "type": "secret"}))).await,
            "allowed_ips (every address) is wider than this key's 127.0.0.0/8");
        refused(&as_key(&app, fk, Method::POST, &path_of(&fenced), Some(json!({"allowed_ips": null}))).await,
            "allowed_ips (every address) is wider");
        // A restricted key it mints stays inside the fence; an unrestricted one too.
        for body in [
            json!({"title": "sub", "type": "secret", "allowed_ips": ["127.0.0.1"], "permissions": ["keys:verify"]}),
            json!({"title": "sub2", "type": "secret", "allowed_ips": ["127.0.0.0/8"]}),
        ] {
            let (s, made) = as_key(&app, fk, Method::POST, "/admin/api-keys", Some(body)).await;
            assert_eq!(s, 200, "{made}");
        }
        // A user is not bound by a key's fence.
        let (s, lifted) = app.post(&path_of(&fenced), json!({"allowed_ips": null})).await;
        assert_eq!(s, 200, "{lifted}");
    }
}
