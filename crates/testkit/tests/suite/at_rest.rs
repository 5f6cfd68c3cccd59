//! No plain secret token is ever stored: the raw bytes of the SQLite file and its WAL, and every
//! text column of every Postgres table, are searched for the tokens create returned.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use keyward::{ApiKeyType, CreateApiKey, PlainToken, RevokeApiKey};
use keyward_testkit::{Harness, TestDb};
use sqlx::Connection;

/// Makes secret keys through the workflows, so the run log is searched too.
async fn make_secrets(h: &Harness) -> Vec<PlainToken> {
    let created = h
        .flows
        .create_api_keys(
            &keyward::Actor::System,
            (0..20)
                .map(|i| CreateApiKey::new(format!("s{i}"), ApiKeyType::Secret, "t"))
                .collect(),
        )
        .await
        .unwrap();
    // Touch every write path a secret key goes through.
    let first = &created[0];
    h.flows
        .update_api_key(&keyward::Actor::System, &first.key.id, "renamed")
        .await
        .unwrap();
    let (rolled, _) = h
        .flows
        .roll_api_key(&keyward::Actor::System, &created[1].key.id, "t", None)
        .await
        .unwrap();
    h.flows
        .revoke_api_key(
            &keyward::Actor::System,
            &first.key.id,
            &RevokeApiKey {
                revoked_by: "t".into(),
                revoke_in: Some(10),
            },
        )
        .await
        .unwrap();
    for c in created.iter().filter(|c| c.key.id != created[1].key.id) {
        assert!(h.kw.authenticate(c.token.expose()).await.unwrap().is_some());
    }
    assert!(h.kw.authenticate(rolled.token.expose()).await.unwrap().is_some());
    // An answer kept for an Idempotency-Key holds a new token: it is stored sealed.
    let (replayed, _) = h
        .flows
        .roll_api_key(&keyward::Actor::System, &created[2].key.id, "t", Some(60))
        .await
        .unwrap();
    let key = keyward::idempotency::IdempotencyKey::parse("at-rest-retry").unwrap();
    let digest = keyward::idempotency::request_digest(&[b"POST", b"/admin/api-keys/x/roll", b"{}"]);
    let keyward::idempotency::Begin::Run(claim) = h.kw.begin_idempotent("t", &key, &digest).await.unwrap() else {
        panic!("a fresh key is claimed")
    };
    let body = serde_json::json!({"api_key": replayed}).to_string();
    assert!(body.contains(replayed.token.expose()));
    h.kw.finish_idempotent(claim, 200, body.as_bytes()).await.unwrap();
    let again = h.kw.begin_idempotent("t", &key, &digest).await.unwrap();
    assert!(
        matches!(&again, keyward::idempotency::Begin::Replay { body: b, .. } if b == body.as_bytes()),
        "the key opens what was sealed"
    );
    created
        .into_iter()
        .map(|c| c.token)
        .chain([rolled.token, replayed.token])
        .collect()
}

/// The token, and its random body alone (in case something stored it without the prefix).
fn needles(t: &PlainToken) -> [Vec<u8>; 2] {
    [t.expose().as_bytes().to_vec(), t.expose().as_bytes()[3..46].to_vec()]
}

#[tokio::test]
async fn no_plaintext_secret_is_in_the_sqlite_file_or_its_wal() {
    let h = Harness::on(TestDb::sqlite()).await;
    let tokens = make_secrets(&h).await;
    let path = h.db.sqlite_path().unwrap();
    let mut searched = 0;
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        let Ok(bytes) = std::fs::read(&file) else { continue };
        searched += bytes.len();
        for t in &tokens {
            for needle in needles(t) {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                    "{} holds a plaintext secret",
                    file.display()
                );
            }
        }
    }
    // Sanity: the digest of each token is there, so the search did look at the key rows.
    let wal = std::fs::read(format!("{}-wal", path.display())).unwrap_or_default();
    let main = std::fs::read(&path).unwrap();
    let digest = keyward::token::digest_hex(tokens[5].expose());
    let found = |b: &[u8]| b.windows(64).any(|w| w == digest.as_bytes());
    assert!(found(&wal) || found(&main), "the digest should be stored");
    assert!(searched > 0);
}

#[tokio::test]
async fn no_plaintext_secret_is_in_any_postgres_text_column() {
    let h = Harness::postgres().await;
    let tokens = make_secrets(&h).await;
    let mut conn = sqlx::PgConnection::connect(&h.db.url).await.unwrap();
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text FROM information_schema.columns
         WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', 'jsonb', 'json')",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(columns.iter().any(|(t, c)| t == "api_key" && c == "token"));
    assert!(columns.iter().any(|(t, c)| t == "idempotency_key" && c == "response"));
    let mut digests_seen = 0;
    for (table, column) in &columns {
        let sql = format!("SELECT \"{column}\"::text FROM \"{table}\" WHERE \"{column}\" IS NOT NULL");
        let values: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for v in &values {
            for t in &tokens {
                assert!(!v.contains(t.expose()), "{table}.{column} holds a plaintext secret");
                assert!(
                    !v.contains(&t.expose()[3..46]),
                    "{table}.{column} holds a secret's body"
                );
            }
            if tokens.iter().any(|t| v == &keyward::token::digest_hex(t.expose())) {
                digests_seen += 1;
            }
        }
    }
    assert_eq!(digests_seen, tokens.len(), "each secret key is stored as its digest");
}
