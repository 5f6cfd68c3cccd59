//! Renders [`Filter`]s and [`ListOptions`] as SQL for any sqlx database, once for both stores.
//!
//! Only column names from [`Field::column`] (static strings) are written into the SQL text; every
//! value is a bound parameter. Where SQLite and Postgres differ by default (NULL ordering, `LIKE`
//! case), the SQL spells the behaviour out so both stores answer alike; what cannot be spelled
//! portably goes through the small [`Dialect`] trait.

use sqlx::{Database, Encode, QueryBuilder, Type};

use crate::filter::{Condition, Direction, Field, Filter, ListOptions, Op, Value};
use crate::time::Timestamp;

/// What differs between the stores' SQL.
pub trait Dialect {
    type DB: Database;
    /// Binds an instant in the store's representation.
    fn push_time(qb: &mut QueryBuilder<Self::DB>, t: Timestamp);
    /// `LIMIT`/`OFFSET` for a page; `take: None` means no limit.
    fn push_page(qb: &mut QueryBuilder<Self::DB>, skip: u64, take: Option<u64>);
    /// A test that the `metadata` column holds the string `value` under the top-level key
    /// `name` (a name [`crate::policy::metadata_key_ok`] accepts).
    fn push_metadata_eq(qb: &mut QueryBuilder<Self::DB>, name: &str, value: &str);
}

/// Appends ` WHERE …` for `filter`.
pub fn push_where<D, F>(qb: &mut QueryBuilder<D::DB>, filter: &Filter<F>)
where
    D: Dialect,
    F: Field,
    String: for<'a> Encode<'a, D::DB> + Type<D::DB>,
    bool: for<'a> Encode<'a, D::DB> + Type<D::DB>,
{
    qb.push(" WHERE ");
    push_filter::<D, F>(qb, filter);
}

/// Appends ` ORDER BY …` (defaulting to the id, always ending with it as the tie-breaker) and the
/// page.
pub fn push_order_and_page<D: Dialect, F: Field>(qb: &mut QueryBuilder<D::DB>, options: &ListOptions<F>) {
    qb.push(" ORDER BY ");
    let mut first = true;
    for o in &options.order {
        if !first {
            qb.push(", ");
        }
        first = false;
        push_column(qb, o.field);
        // Postgres' defaults, spelled out so SQLite sorts NULLs the same way.
        qb.push(match o.direction {
            Direction::Asc => " ASC NULLS LAST",
            Direction::Desc => " DESC NULLS FIRST",
        });
    }
    if !options.order.iter().any(|o| o.field == F::ID) {
        if !first {
            qb.push(", ");
        }
        push_column(qb, F::ID);
        // Ties follow the primary direction: ids are creation-ordered, so `-created_at` stays
        // newest first even for rows made in the same millisecond.
        qb.push(match options.order.first().map(|o| o.direction) {
            Some(Direction::Desc) => " DESC",
            _ => " ASC",
        });
    }
    D::push_page(qb, options.skip, options.take);
}

fn push_column<DB: Database, F: Field>(qb: &mut QueryBuilder<DB>, field: F) {
    qb.push('"').push(field.column()).push('"');
}

fn push_filter<D, F>(qb: &mut QueryBuilder<D::DB>, filter: &Filter<F>)
where
    D: Dialect,
    F: Field,
    String: for<'a> Encode<'a, D::DB> + Type<D::DB>,
    bool: for<'a> Encode<'a, D::DB> + Type<D::DB>,
{
    qb.push("(1=1");
    if let Some(q) = filter.q.as_deref().filter(|q| !q.is_empty()) {
        let pattern = format!("%{}%", escape_like(&q.to_lowercase()));
        qb.push(" AND (");
        for (i, field) in F::SEARCHED.iter().enumerate() {
            if i > 0 {
                qb.push(" OR ");
            }
            qb.push("LOWER(");
            push_column(qb, *field);
            qb.push(") LIKE ");
            qb.push_bind(pattern.clone());
            qb.push(" ESCAPE '\\'");
        }
        qb.push(")");
    }
    for c in &filter.conditions {
        qb.push(" AND ");
        push_condition::<D, F>(qb, c);
    }
    for (name, value) in &filter.metadata {
        qb.push(" AND ");
        D::push_metadata_eq(qb, name, value);
    }
    for group in &filter.and {
        qb.push(" AND ");
        push_filter::<D, F>(qb, group);
    }
    if !filter.or.is_empty() {
        qb.push(" AND (");
        for (i, group) in filter.or.iter().enumerate() {
            if i > 0 {
                qb.push(" OR ");
            }
            push_filter::<D, F>(qb, group);
        }
        qb.push(")");
    }
    qb.push(")");
}

fn push_condition<D, F>(qb: &mut QueryBuilder<D::DB>, c: &Condition<F>)
where
    D: Dialect,
    F: Field,
    String: for<'a> Encode<'a, D::DB> + Type<D::DB>,
    bool: for<'a> Encode<'a, D::DB> + Type<D::DB>,
{
    match (c.op, c.values.as_slice()) {
        (Op::Eq, [Value::Null]) => {
            push_column(qb, c.field);
            qb.push(" IS NULL");
        }
        (Op::Ne, [Value::Null]) => {
            push_column(qb, c.field);
            qb.push(" IS NOT NULL");
        }
        (Op::In, []) => {
            qb.push("1=0");
        }
        (Op::Nin, []) => {
            qb.push("1=1");
        }
        (Op::In | Op::Nin, values) => {
            push_column(qb, c.field);
            qb.push(if c.op == Op::In { " IN (" } else { " NOT IN (" });
            for (i, v) in values.iter().enumerate() {
                if i > 0 {
                    qb.push(", ");
                }
                push_value::<D>(qb, v);
            }
            qb.push(")");
        }
        (Op::ILike, [v]) => {
            qb.push("LOWER(");
            push_column(qb, c.field);
            qb.push(") LIKE LOWER(");
            push_value::<D>(qb, v);
            qb.push(")");
        }
        (op, [v]) => {
            push_column(qb, c.field);
            qb.push(comparison(op));
            push_value::<D>(qb, v);
        }
        // `Filter::push` admits only one value for scalar operators; render a condition that
        // matches nothing rather than trust an impossible state.
        (_, _) => {
            qb.push("1=0");
        }
    }
}

/// The SQL of a one-value operator.
fn comparison(op: Op) -> &'static str {
    match op {
        Op::Eq => " = ",
        Op::Ne => " <> ",
        Op::Gt => " > ",
        Op::Gte => " >= ",
        Op::Lt => " < ",
        Op::Lte => " <= ",
        // Case-sensitive on both stores (SQLite connections set case_sensitive_like).
        _ => " LIKE ",
    }
}

fn push_value<D>(qb: &mut QueryBuilder<D::DB>, v: &Value)
where
    D: Dialect,
    String: for<'a> Encode<'a, D::DB> + Type<D::DB>,
    bool: for<'a> Encode<'a, D::DB> + Type<D::DB>,
{
    match v {
        Value::Text(s) => {
            qb.push_bind(s.clone());
        }
        Value::Time(t) => D::push_time(qb, *t),
        Value::Bool(b) => {
            qb.push_bind(*b);
        }
        Value::Null => {
            qb.push("NULL");
        }
    }
}

/// Escapes `%`, `_` and `\` so `q` matches literally.
fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Runs `select` (a `SELECT … FROM table` without WHERE) filtered, ordered and paged.
pub async fn fetch_list<D, F, R>(
    pool: &sqlx::Pool<D::DB>,
    select: &'static str,
    filter: &Filter<F>,
    options: &ListOptions<F>,
) -> crate::Result<Vec<R>>
where
    D: Dialect,
    F: Field,
    R: for<'r> sqlx::FromRow<'r, <D::DB as Database>::Row> + Send + Unpin,
    String: for<'a> Encode<'a, D::DB> + Type<D::DB>,
    bool: for<'a> Encode<'a, D::DB> + Type<D::DB>,
    <D::DB as Database>::Arguments: sqlx::IntoArguments<D::DB>,
    for<'c> &'c mut <D::DB as Database>::Connection: sqlx::Executor<'c, Database = D::DB>,
{
    let mut qb = QueryBuilder::new(select);
    push_where::<D, F>(&mut qb, filter);
    push_order_and_page::<D, F>(&mut qb, options);
    qb.build_query_as()
        .fetch_all(pool)
        .await
        .map_err(crate::store::db_error)
}

/// Counts the rows of `table` matching `filter`.
pub async fn fetch_count<D, F>(pool: &sqlx::Pool<D::DB>, table: &'static str, filter: &Filter<F>) -> crate::Result<u64>
where
    D: Dialect,
    F: Field,
    String: for<'a> Encode<'a, D::DB> + Type<D::DB>,
    bool: for<'a> Encode<'a, D::DB> + Type<D::DB>,
    i64: for<'r> sqlx::Decode<'r, D::DB> + Type<D::DB>,
    usize: sqlx::ColumnIndex<<D::DB as Database>::Row>,
    <D::DB as Database>::Arguments: sqlx::IntoArguments<D::DB>,
    for<'c> &'c mut <D::DB as Database>::Connection: sqlx::Executor<'c, Database = D::DB>,
{
    let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM ");
    qb.push(table);
    push_where::<D, F>(&mut qb, filter);
    let n: i64 = qb
        .build_query_scalar()
        .fetch_one(pool)
        .await
        .map_err(crate::store::db_error)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The columns every store selects for a key, in [`crate::store::KeyRow`] order.
pub const SELECT_KEYS: &str = "SELECT id, token, salt, redacted, title, type, last_used_at, created_by, revoked_by, \
                               revoked_at, created_at, updated_at, deleted_at, expires_at, metadata, permissions, \
                               allowed_ips FROM api_key";

/// The columns every store selects for a sales channel.
pub const SELECT_CHANNELS: &str =
    "SELECT id, name, description, is_disabled, metadata, created_at, updated_at, deleted_at FROM sales_channel";
