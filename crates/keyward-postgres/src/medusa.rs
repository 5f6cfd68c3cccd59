//! Reading a Medusa v2 database: the live rows of `api_key`, `sales_channel` and
//! `publishable_api_key_sales_channel`, in one read-only, repeatable-read transaction (a
//! consistent snapshot; Medusa's database is never written).
//!
//! The queries are checked at run time, not compile time: they run against Medusa's schema,
//! not keyward's. Every column is cast to the type keyward reads, so a database whose columns
//! differ slightly in type still reads; one that lacks a table or a column is refused by name.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use keyward::import::{MedusaChannel, MedusaKey, MedusaLink, MedusaSnapshot};
use keyward::{Error, Result, Timestamp};
use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::{Connection, PgConnection, Row};

const KEYS: &str = "SELECT id::text, token::text, salt::text, redacted::text, title::text, type::text AS type,
        last_used_at::timestamptz, created_by::text, created_at::timestamptz, revoked_by::text,
        revoked_at::timestamptz, updated_at::timestamptz
    FROM api_key WHERE deleted_at IS NULL ORDER BY id";
const CHANNELS: &str = "SELECT id::text, name::text, description::text, is_disabled::boolean,
        metadata::jsonb, created_at::timestamptz, updated_at::timestamptz
    FROM sales_channel WHERE deleted_at IS NULL ORDER BY id";
const LINKS: &str = "SELECT publishable_key_id::text, sales_channel_id::text
    FROM publishable_api_key_sales_channel WHERE deleted_at IS NULL ORDER BY 1, 2";

/// The rows Medusa marks deleted, per table (left out, counted in the report).
const DELETED: [(&str, &str); 3] = [
    ("api_key", "SELECT COUNT(*) FROM api_key WHERE deleted_at IS NOT NULL"),
    (
        "sales_channel",
        "SELECT COUNT(*) FROM sales_channel WHERE deleted_at IS NOT NULL",
    ),
    (
        "publishable_api_key_sales_channel",
        "SELECT COUNT(*) FROM publishable_api_key_sales_channel WHERE deleted_at IS NOT NULL",
    ),
];

/// Whether `url` names a PostgreSQL database (Medusa v2 runs on nothing else).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Where a Medusa database is, without its password: what errors name.
fn place(options: &PgConnectOptions) -> String {
    format!(
        "{}:{}/{}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or("(default database)")
    )
}

/// Reads what an import needs from the Medusa database at `url`.
pub async fn read(url: &str) -> Result<MedusaSnapshot> {
    if !is_postgres_url(url) {
        return Err(Error::invalid_data(
            "--from-medusa is not a PostgreSQL URL: it starts with postgres:// or postgresql://",
        ));
    }
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| Error::invalid_data(format!("--from-medusa is not a PostgreSQL URL: {e}")))?;
    let at = place(&options);
    let mut conn = tokio::time::timeout(std::time::Duration::from_secs(10), PgConnection::connect_with(&options))
        .await
        .map_err(|_| Error::unavailable(format!("cannot reach the Medusa database at {at}: no answer in 10 s")))?
        .map_err(|e| Error::unavailable(format!("cannot reach the Medusa database at {at}: {e}")))?;
    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| Error::unavailable(format!("cannot read the Medusa database at {at}: {e}")))?;
    let refused = |table: &'static str| {
        let at = at.clone();
        move |e: sqlx::Error| schema_error(&at, table, e)
    };
    let key_rows = sqlx::query(KEYS)
        .fetch_all(&mut *tx)
        .await
        .map_err(refused("api_key"))?;
    let channel_rows = sqlx::query(CHANNELS)
        .fetch_all(&mut *tx)
        .await
        .map_err(refused("sales_channel"))?;
    let link_rows = sqlx::query(LINKS)
        .fetch_all(&mut *tx)
        .await
        .map_err(refused("publishable_api_key_sales_channel"))?;
    let mut deleted = [0u64; 3];
    for (n, (table, query)) in deleted.iter_mut().zip(DELETED) {
        let count: i64 = sqlx::query_scalar(query)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| schema_error(&at, table, e))?;
        *n = u64::try_from(count).unwrap_or(0);
    }
    // Read only: nothing to commit.
    tx.rollback()
        .await
        .map_err(|e| Error::unavailable(format!("the Medusa database at {at}: {e}")))?;
    Ok(MedusaSnapshot {
        keys: key_rows.iter().map(key).collect::<Result<_>>()?,
        channels: channel_rows.iter().map(channel).collect::<Result<_>>()?,
        links: link_rows.iter().map(link).collect::<Result<_>>()?,
        deleted_keys: deleted[0],
        deleted_channels: deleted[1],
        deleted_links: deleted[2],
    })
}

fn schema_error(at: &str, table: &str, e: sqlx::Error) -> Error {
    if let sqlx::Error::Database(db) = &e {
        match db.code().as_deref() {
            Some("42P01") => {
                return Error::invalid_data(format!(
                    "the database at {at} is not a Medusa v2 database: it has no table {table:?}"
                ));
            }
            Some("42703") => {
                return Error::invalid_data(format!(
                    "the database at {at} is not a Medusa v2 database: table {table:?} lacks a column ({})",
                    db.message()
                ));
            }
            _ => {}
        }
    }
    Error::unavailable(format!(
        "cannot read table {table:?} of the Medusa database at {at}: {e}"
    ))
}

/// A column's value, or an error naming the row and the column.
fn get<'r, T>(row: &'r PgRow, table: &str, id: &str, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(|e| {
        Error::invalid_data(format!(
            "{table} row {id:?}: column {column}: {e}; nothing was imported"
        ))
    })
}

fn instant(t: DateTime<Utc>) -> Timestamp {
    Timestamp::from_datetime(t)
}

fn key(row: &PgRow) -> Result<MedusaKey> {
    let id: String = get(row, "api_key", "?", "id")?;
    let g = |c: &str| get::<String>(row, "api_key", &id, c);
    let t = |c: &str| get::<Option<DateTime<Utc>>>(row, "api_key", &id, c).map(|t| t.map(instant));
    let required = |c: &str| {
        t(c)?.ok_or_else(|| Error::invalid_data(format!("api_key row {id:?}: {c} is null; nothing was imported")))
    };
    Ok(MedusaKey {
        token: g("token")?,
        salt: get::<Option<String>>(row, "api_key", &id, "salt")?.unwrap_or_default(),
        redacted: g("redacted")?,
        title: g("title")?,
        key_type: g("type")?,
        last_used_at: t("last_used_at")?,
        created_by: get::<Option<String>>(row, "api_key", &id, "created_by")?.unwrap_or_default(),
        created_at: required("created_at")?,
        revoked_by: get(row, "api_key", &id, "revoked_by")?,
        revoked_at: t("revoked_at")?,
        updated_at: required("updated_at")?,
        id,
    })
}

fn channel(row: &PgRow) -> Result<MedusaChannel> {
    let id: String = get(row, "sales_channel", "?", "id")?;
    let t = |c: &str| {
        get::<Option<DateTime<Utc>>>(row, "sales_channel", &id, c)?
            .map(instant)
            .ok_or_else(|| Error::invalid_data(format!("sales_channel row {id:?}: {c} is null; nothing was imported")))
    };
    Ok(MedusaChannel {
        name: get(row, "sales_channel", &id, "name")?,
        description: get(row, "sales_channel", &id, "description")?,
        is_disabled: get(row, "sales_channel", &id, "is_disabled")?,
        metadata: get(row, "sales_channel", &id, "metadata")?,
        created_at: t("created_at")?,
        updated_at: t("updated_at")?,
        id,
    })
}

fn link(row: &PgRow) -> Result<MedusaLink> {
    let table = "publishable_api_key_sales_channel";
    Ok(MedusaLink {
        publishable_key_id: get(row, table, "?", "publishable_key_id")?,
        sales_channel_id: get(row, table, "?", "sales_channel_id")?,
    })
}
