//! A Medusa-shaped database, built by the tests themselves on the local Postgres: Medusa 2.x's
//! three key tables (`api_key`, `sales_channel`, `publishable_api_key_sales_channel`) with keys
//! in every state Medusa has, and the plaintext token of each so a test can use it.
//!
//! Secret keys are stored as Medusa stores them (scrypt hex and a 32-hex salt). Three of them are
//! token/salt/hash triples written by a real Medusa 2.21.2 (test data, never real keys), so the
//! hash check is proven against Medusa's own output, not only against itself.

use keyward::{ApiKeyType, Timestamp};
use sqlx::Connection;

use crate::TestDb;

/// How a key of the fixture stands, and what Medusa answered for its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Active,
    Revoked,
    /// Revocation scheduled a year after the fixture's `now`: works until then.
    RevokesLater,
    /// `deleted_at` set: not imported, its token refused.
    Deleted,
}

/// A key of the fixture, with its plaintext token.
#[derive(Debug, Clone)]
pub struct FixtureKey {
    pub id: &'static str,
    pub token: String,
    pub kind: ApiKeyType,
    pub state: State,
    pub title: &'static str,
    /// Live links (publishable keys).
    pub channels: Vec<&'static str>,
}

impl FixtureKey {
    /// Whether Medusa accepts the token (at the fixture's `now`).
    pub fn works(&self) -> bool {
        matches!(self.state, State::Active | State::RevokesLater)
    }
}

/// Token, salt and hash as Medusa 2.21.2 wrote them.
pub const MEDUSA_VECTORS: [(&str, &str, &str); 3] = [
    (
        "sk_0e7ad621f1d6fe8771b95be4ba0503345831cef53998538da51d67546a9bdfba",
        "587ebafc3a41f313d89cf47d04854d2c",
        "324ba6351e6918fc7b2833ceebb0268fba863ac6517a92002d223d90bf9ada96a1d8c6317c17671a12e5112602bec0762fe05b44b66b917b06a4b610a1654661",
    ),
    (
        "sk_517e35df36e432c3ac902901b2266c6c86399724bd8e40ae776f3b9fe428346e",
        "3a1cdfe321a3a689ddff21af85637844",
        "a711556b89f17172ea7300009d72be67d8fbe7b2ef505da73f04a3b156342f5e93440c5d6e9655e5ff22a4a362a48ec622c6b6d3e56ad9cb089aa3815092b152",
    ),
    (
        "sk_ab2cf19d19cd56dbdc36dc314cae641cbd67adb9cc5765ff5086d87023b08827",
        "15b89cc6869d857288ef4ba65edddf4a",
        "523b2d8a3b6c8e1b31537fa02af13b818210ea4b61677fb72a029d4a961a8f446c447f0dc864ea14f7e5f4a036d416e41b27252e88d74bd9a66592a84adb680b",
    ),
];

/// Medusa 2.x's schema of the three tables (column names, types and constraints as a Medusa
/// migration leaves them).
pub const SCHEMA: &str = r#"
CREATE TABLE api_key (
    id text PRIMARY KEY, token text NOT NULL, salt text NOT NULL, redacted text NOT NULL,
    title text NOT NULL, type text NOT NULL, last_used_at timestamptz, created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(), revoked_by text, revoked_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(), deleted_at timestamptz,
    CONSTRAINT api_key_type_check CHECK (type = ANY (ARRAY['publishable'::text, 'secret'::text])));
CREATE UNIQUE INDEX "IDX_api_key_token_unique" ON api_key (token);
CREATE INDEX "IDX_api_key_redacted" ON api_key (redacted) WHERE deleted_at IS NULL;
CREATE TABLE sales_channel (
    id text PRIMARY KEY, name text NOT NULL, description text, is_disabled boolean NOT NULL DEFAULT false,
    metadata jsonb, created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz);
CREATE TABLE publishable_api_key_sales_channel (
    publishable_key_id varchar(255) NOT NULL, sales_channel_id varchar(255) NOT NULL, id varchar(255) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP, updated_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    deleted_at timestamptz, PRIMARY KEY (publishable_key_id, sales_channel_id));
"#;

/// A key row of the fixture: id, type, state, title, linked channels, `revoked_at` (seconds
/// from the fixture's now).
type Row = (
    &'static str,
    ApiKeyType,
    State,
    &'static str,
    &'static [&'static str],
    Option<i64>,
);

/// A secret key as an import leaves it in keyward (Medusa's scrypt hash and salt), made from
/// `seed` and `i`, created at `at`; and its plaintext token.
pub fn legacy_secret(seed: &str, i: usize, at: Timestamp) -> (keyward::store::StoredKey, String) {
    let token = format!("sk_{}", keyward::token::digest_hex(&format!("{seed}-{i}")));
    let salt = keyward::token::digest_hex(&format!("{seed}-salt-{i}"))[..32].to_owned();
    let key = keyward::ApiKey {
        id: keyward::ApiKeyId::parse(&format!("apk_01{}{i:020}", seed.to_uppercase())).expect("an id"),
        token: String::new(),
        redacted: keyward::token::redact(&token),
        title: format!("{seed} {i}"),
        key_type: ApiKeyType::Secret,
        last_used_at: None,
        created_by: "medusa".into(),
        revoked_by: None,
        revoked_at: None,
        created_at: at,
        updated_at: at,
        deleted_at: None,
        expires_at: None,
        policy: Default::default(),
    };
    let stored_token = keyward::legacy::medusa_hash(&token, &salt).expect("scrypt");
    (
        keyward::store::StoredKey {
            key,
            stored_token,
            salt,
        },
        token,
    )
}

/// A Medusa database for one test.
pub struct MedusaDb {
    pub db: TestDb,
    pub keys: Vec<FixtureKey>,
    /// The instant the fixture is built around.
    pub now: Timestamp,
}

fn pg_time(t: Timestamp) -> String {
    t.to_string()
}

/// A token in Medusa's format (`pk_`/`sk_` + 64 lower-case hex) from a seed.
fn medusa_token(kind: ApiKeyType, seed: u32) -> String {
    let digest = keyward::token::digest_hex(&format!("fixture-{seed}"));
    format!("{}{digest}", kind.token_prefix())
}

impl MedusaDb {
    /// The full fixture around `now`.
    pub async fn create(now: Timestamp) -> Self {
        let db = TestDb::postgres().await;
        let mut me = Self {
            db,
            keys: Vec::new(),
            now,
        };
        me.execute(SCHEMA).await;
        me.fill().await;
        me
    }

    /// `n` keys (half publishable, each linked to one of ten channels; half secret, with a hash
    /// of Medusa's shape that no token matches), made by the database itself: what an import
    /// benchmark reads. `keys` stays empty (there are no tokens to use).
    pub async fn bulk(n: u32, now: Timestamp) -> Self {
        let db = TestDb::postgres().await;
        let me = Self {
            db,
            keys: Vec::new(),
            now,
        };
        me.execute(SCHEMA).await;
        let at = pg_time(now);
        me.execute(&format!(
            "INSERT INTO sales_channel (id, name, created_at, updated_at)
               SELECT 'sc_01BULK' || lpad(c::text, 19, '0'), 'channel ' || c, '{at}', '{at}' FROM generate_series(1, 10) c;
             INSERT INTO api_key (id, token, salt, redacted, title, type, created_by, created_at, updated_at)
               SELECT 'apk_01BULK' || lpad(i::text, 18, '0'),
                      CASE WHEN i % 2 = 0 THEN 'pk_' || md5(i::text) || md5('b' || i)
                           ELSE md5(i::text) || md5('b' || i) || md5('c' || i) || md5('d' || i) END,
                      CASE WHEN i % 2 = 0 THEN '' ELSE md5('salt' || i) END,
                      CASE WHEN i % 2 = 0 THEN 'pk_' || left(md5(i::text), 3) || '***' || right(md5('b' || i), 3)
                           ELSE 'sk_' || left(md5('t' || i), 3) || '***' || right(md5('t' || i), 3) END,
                      'key ' || i, CASE WHEN i % 2 = 0 THEN 'publishable' ELSE 'secret' END,
                      'user_01BULK', '{at}', '{at}'
               FROM generate_series(1, {n}) i;
             INSERT INTO publishable_api_key_sales_channel (publishable_key_id, sales_channel_id, id)
               SELECT 'apk_01BULK' || lpad(i::text, 18, '0'), 'sc_01BULK' || lpad((1 + i % 10)::text, 19, '0'), 'pksc_' || i
               FROM generate_series(2, {n}, 2) i;"
        ))
        .await;
        me
    }

    /// A Postgres database with none of Medusa's tables.
    pub async fn empty() -> TestDb {
        TestDb::postgres().await
    }

    pub fn url(&self) -> &str {
        &self.db.url
    }

    /// Runs SQL on the Medusa database (to break it on purpose, or to change it between runs).
    pub async fn execute(&self, sql: &str) {
        let mut conn = sqlx::PgConnection::connect(&self.db.url)
            .await
            .expect("connect to the Medusa test database");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn fill(&mut self) {
        let now = self.now;
        let (hour_ago, created) = (now.plus_seconds(-3_600), now.plus_seconds(-86_400));
        let mut sql = channels_sql(created, hour_ago);
        let mut vectors = MEDUSA_VECTORS.iter();
        for (n, row) in KEY_ROWS.into_iter().enumerate() {
            let (token, salt, stored) = fixture_token(row.1, n, &mut vectors);
            sql.push_str(&self.key_sql(n, row, (token, salt, stored), created, hour_ago));
        }
        // Rows Medusa leaves behind: a deleted key's link (deleted too), and a live link to a
        // deleted channel.
        sql.push_str(
            "INSERT INTO publishable_api_key_sales_channel (publishable_key_id, sales_channel_id, id, deleted_at)
             VALUES ('apk_01PKDELETED00000000000000', 'sc_01WEB000000000000000000000', 'pksc_x', now());
             INSERT INTO publishable_api_key_sales_channel (publishable_key_id, sales_channel_id, id)
             VALUES ('apk_01PKSTORE0000000000000000', 'sc_01GONE00000000000000000000', 'pksc_y');\n",
        );
        self.execute(&sql).await;
    }

    /// The statements that insert one fixture key (and its links), noting it in `self.keys`.
    fn key_sql(
        &mut self,
        n: usize,
        (id, kind, state, title, links, revoked_at): Row,
        (token, salt, stored): (String, String, String),
        created: Timestamp,
        hour_ago: Timestamp,
    ) -> String {
        use State::*;
        let user = "user_01FIXTURE0000000000000000";
        let mut sql = String::new();
        let deleted_at = if state == Deleted {
            format!("'{}'", pg_time(hour_ago))
        } else {
            "NULL".to_owned()
        };
        let (revoked_by, revoked_at) = match revoked_at {
            Some(from_now) => (
                format!("'{user}'"),
                format!("'{}'", pg_time(self.now.plus_seconds(from_now))),
            ),
            None => ("NULL".to_owned(), "NULL".to_owned()),
        };
        // One key was used (Medusa itself never writes this; an older store might have).
        let last_used = if id == "apk_01SKBACKOFFICE0000000000" {
            format!("'{}'", pg_time(hour_ago))
        } else {
            "NULL".to_owned()
        };
        let created_by = if id == "apk_01PKDEFAULT00000000000000" {
            ""
        } else {
            user
        };
        sql.push_str(&format!(
            "INSERT INTO api_key (id, token, salt, redacted, title, type, last_used_at, created_by, created_at,
                                  revoked_by, revoked_at, updated_at, deleted_at)
             VALUES ('{id}', '{stored}', '{salt}', '{redacted}', '{title}', '{kind}', {last_used}, '{created_by}',
                     '{c}', {revoked_by}, {revoked_at}, '{c}', {deleted_at});\n",
            redacted = keyward::token::redact(&token),
            c = pg_time(created),
        ));
        for (i, channel) in links.iter().enumerate() {
            sql.push_str(&format!(
                "INSERT INTO publishable_api_key_sales_channel (publishable_key_id, sales_channel_id, id)
                 VALUES ('{id}', '{channel}', 'pksc_{n}_{i}');\n"
            ));
        }
        self.keys.push(FixtureKey {
            id,
            token,
            kind,
            state,
            title,
            channels: links.to_vec(),
        });
        sql
    }

    /// The fixture's key with this id.
    pub fn key(&self, id: &str) -> &FixtureKey {
        self.keys
            .iter()
            .find(|k| k.id == id)
            .unwrap_or_else(|| panic!("no fixture key {id}"))
    }

    /// The keys that are live rows (imported).
    pub fn live(&self) -> impl Iterator<Item = &FixtureKey> {
        self.keys.iter().filter(|k| k.state != State::Deleted)
    }
}

/// The fixture's sales channels, as statements.
fn channels_sql(created: Timestamp, hour_ago: Timestamp) -> String {
    let mut sql = String::new();
    let channels = [
        (
            "sc_01DEFAULT00000000000000000",
            "Default Sales Channel",
            Some("Created by Medusa"),
            false,
            None,
            false,
        ),
        (
            "sc_01WEB000000000000000000000",
            "Web shop",
            Some("the storefront"),
            false,
            None,
            false,
        ),
        (
            "sc_01APP000000000000000000000",
            "Mobile app",
            None,
            false,
            Some(r#"{"platform": "ios"}"#),
            false,
        ),
        (
            "sc_01CLOSED000000000000000000",
            "Closed shop",
            Some("disabled"),
            true,
            None,
            false,
        ),
        ("sc_01GONE00000000000000000000", "Gone shop", None, false, None, true),
    ];
    for (id, name, description, disabled, metadata, deleted) in channels {
        sql.push_str(&format!(
            "INSERT INTO sales_channel (id, name, description, is_disabled, metadata, created_at, updated_at, deleted_at)
             VALUES ('{id}', '{name}', {}, {disabled}, {}, '{c}', '{c}', {});\n",
            description.map_or("NULL".to_owned(), |d| format!("'{d}'")),
            metadata.map_or("NULL".to_owned(), |m| format!("'{m}'")),
            if deleted { format!("'{}'", pg_time(hour_ago)) } else { "NULL".to_owned() },
            c = pg_time(created),
        ));
    }
    sql
}

/// The fixture's keys: id, type, state, title, linked channels, revocation (seconds from now).
const KEY_ROWS: [Row; 12] = {
    use ApiKeyType::{Publishable, Secret};
    use State::*;
    [
        (
            "apk_01PKDEFAULT00000000000000",
            Publishable,
            Active,
            "Default Publishable API Key",
            &["sc_01DEFAULT00000000000000000"],
            None,
        ),
        (
            "apk_01PKSTORE0000000000000000",
            Publishable,
            Active,
            "storefront",
            &["sc_01WEB000000000000000000000", "sc_01APP000000000000000000000"],
            None,
        ),
        (
            "apk_01PKCLOSED000000000000000",
            Publishable,
            Active,
            "closed shop",
            &["sc_01CLOSED000000000000000000"],
            None,
        ),
        (
            "apk_01PKLONELY000000000000000",
            Publishable,
            Active,
            "no channel",
            &[],
            None,
        ),
        (
            "apk_01PKOLD000000000000000000",
            Publishable,
            Revoked,
            "old storefront",
            &["sc_01WEB000000000000000000000"],
            Some(-3_600),
        ),
        (
            "apk_01PKDELETED00000000000000",
            Publishable,
            Deleted,
            "deleted storefront",
            &[],
            Some(-3_600),
        ),
        ("apk_01SKCI000000000000000000", Secret, Active, "ci deploys", &[], None),
        ("apk_01SKBACKOFFICE0000000000", Secret, Active, "backoffice", &[], None),
        (
            "apk_01SKLEAKED00000000000000",
            Secret,
            Revoked,
            "leaked",
            &[],
            Some(-3_600),
        ),
        (
            "apk_01SKRETIRING000000000000",
            Secret,
            RevokesLater,
            "retiring next year",
            &[],
            Some(365 * 86_400),
        ),
        (
            "apk_01SKGRACEOVER00000000000",
            Secret,
            Revoked,
            "grace period over",
            &[],
            Some(-60),
        ),
        (
            "apk_01SKDELETED0000000000000",
            Secret,
            Deleted,
            "deleted secret",
            &[],
            Some(-3_600),
        ),
    ]
};

/// A fixture key's token, salt and stored form: Medusa's own vectors for the first secret
/// keys, then tokens made here (hashed with Medusa's scrypt).
fn fixture_token(
    kind: ApiKeyType,
    n: usize,
    vectors: &mut std::slice::Iter<'_, (&str, &str, &str)>,
) -> (String, String, String) {
    use ApiKeyType::{Publishable, Secret};
    match kind {
        Publishable => {
            let t = medusa_token(kind, n as u32);
            (t.clone(), String::new(), t)
        }
        Secret => match vectors.next() {
            Some((t, s, h)) => ((*t).to_owned(), (*s).to_owned(), (*h).to_owned()),
            None => {
                let t = medusa_token(kind, n as u32);
                let salt = keyward::token::digest_hex(&format!("salt-{n}"))[..32].to_owned();
                let hash = keyward::legacy::medusa_hash(&t, &salt).expect("scrypt");
                (t, salt, hash)
            }
        },
    }
}
