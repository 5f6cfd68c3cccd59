//! Statements and their execution, written once for every sqlx backend the log runs on.
//!
//! A [`Stmt`] carries its SQL and its values; a connection of either backend runs it
//! ([`LogConn`]) and its rows read back as the log's records ([`LogRows`]). The bounds that make
//! a backend able to do so sit on the two blanket impls below, and nowhere else: the log's
//! algorithm is generic over the backend and needs only `DB: Dialect`.

use std::borrow::Cow;

use futures_util::future::BoxFuture;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{ColumnIndex, Connection, Database, Decode, Encode, Executor, FromRow, IntoArguments, Type};

use super::rows::{DeliveryRow, EventRow, JobRunRow, RunRow, StepRow};
use crate::events::{DeliveryRecord, Event};
use crate::jobs::JobRunRecord;
use crate::log::{LogError, RunRecord, StepRecord, db};

/// A value bound to a statement.
#[derive(Debug, Clone)]
pub enum Arg<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Bool(bool),
    Json(Option<Cow<'a, Value>>),
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v)
    }
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

impl From<bool> for Arg<'_> {
    fn from(v: bool) -> Self {
        Arg::Bool(v)
    }
}

impl<'a> From<&'a Value> for Arg<'a> {
    fn from(v: &'a Value) -> Self {
        Arg::Json(Some(Cow::Borrowed(v)))
    }
}

impl<'a> From<Option<&'a Value>> for Arg<'a> {
    fn from(v: Option<&'a Value>) -> Self {
        Arg::Json(v.map(Cow::Borrowed))
    }
}

impl From<Value> for Arg<'_> {
    fn from(v: Value) -> Self {
        Arg::Json(Some(Cow::Owned(v)))
    }
}

/// A statement in the backend's own SQL, with its values in placeholder order.
#[derive(Debug)]
pub struct Stmt<'a> {
    sql: String,
    args: Vec<Arg<'a>>,
}

impl<'a> Stmt<'a> {
    pub(crate) fn new(sql: String) -> Self {
        Self { sql, args: Vec::new() }
    }

    pub(crate) fn bind(mut self, v: impl Into<Arg<'a>>) -> Self {
        self.args.push(v.into());
        self
    }

    fn query<DB>(self) -> sqlx::query::Query<'a, DB, DB::Arguments>
    where
        DB: Database,
        for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
        Option<i64>: for<'q> Encode<'q, DB> + Type<DB>,
        bool: for<'q> Encode<'q, DB> + Type<DB>,
        for<'q> Option<Json<&'q Value>>: Encode<'q, DB> + Type<DB>,
    {
        let mut q = sqlx::query::<DB>(sqlx::AssertSqlSafe(self.sql));
        for arg in self.args {
            q = match arg {
                Arg::Text(v) => q.bind(v),
                Arg::Int(v) => q.bind(v),
                Arg::Bool(v) => q.bind(v),
                Arg::Json(v) => q.bind(v.as_deref().map(Json)),
            };
        }
        q
    }
}

/// Rows changed by a statement.
pub trait Affected {
    fn rows(&self) -> u64;
}

#[cfg(feature = "sqlite")]
impl Affected for sqlx::sqlite::SqliteQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

#[cfg(feature = "postgres")]
impl Affected for sqlx::postgres::PgQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

type RowOf<C> = <<C as Connection>::Database as Database>::Row;

/// A connection that runs the log's statements.
pub trait LogConn: Connection {
    /// Runs `stmt`; the number of rows it changed.
    fn run<'a>(&'a mut self, stmt: Stmt<'a>) -> BoxFuture<'a, Result<u64, LogError>>;

    /// Runs `stmt`; every row it returned.
    fn rows<'a>(&'a mut self, stmt: Stmt<'a>) -> BoxFuture<'a, Result<Vec<RowOf<Self>>, LogError>>;
}

impl<C> LogConn for C
where
    C: Connection,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
    <C::Database as Database>::Arguments: IntoArguments<C::Database>,
    <C::Database as Database>::QueryResult: Affected,
    for<'q> Option<&'q str>: Encode<'q, C::Database> + Type<C::Database>,
    Option<i64>: for<'q> Encode<'q, C::Database> + Type<C::Database>,
    bool: for<'q> Encode<'q, C::Database> + Type<C::Database>,
    for<'q> Option<Json<&'q Value>>: Encode<'q, C::Database> + Type<C::Database>,
{
    fn run<'a>(&'a mut self, stmt: Stmt<'a>) -> BoxFuture<'a, Result<u64, LogError>> {
        Box::pin(async move {
            let done = stmt.query::<C::Database>().execute(self).await.map_err(db)?;
            Ok(done.rows())
        })
    }

    fn rows<'a>(&'a mut self, stmt: Stmt<'a>) -> BoxFuture<'a, Result<Vec<RowOf<Self>>, LogError>> {
        Box::pin(async move { stmt.query::<C::Database>().fetch_all(self).await.map_err(db) })
    }
}

/// A row read back as one of the log's records, or as a named column.
pub trait LogRows {
    fn run(&self) -> Result<RunRecord, LogError>;
    fn step(&self) -> Result<StepRecord, LogError>;
    fn event(&self) -> Result<Event, LogError>;
    fn delivery(&self) -> Result<DeliveryRecord, LogError>;
    fn job_run(&self) -> Result<JobRunRecord, LogError>;
    fn text(&self, column: &str) -> Result<String, LogError>;
    fn int(&self, column: &str) -> Result<i64, LogError>;
    fn json(&self, column: &str) -> Result<Option<Value>, LogError>;
}

impl<R> LogRows for R
where
    R: sqlx::Row,
    for<'a> &'a str: ColumnIndex<R>,
    for<'r> RunRow: FromRow<'r, R>,
    for<'r> StepRow: FromRow<'r, R>,
    for<'r> EventRow: FromRow<'r, R>,
    for<'r> DeliveryRow: FromRow<'r, R>,
    for<'r> JobRunRow: FromRow<'r, R>,
    String: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    i64: for<'r> Decode<'r, R::Database> + Type<R::Database>,
    Option<Json<Value>>: for<'r> Decode<'r, R::Database> + Type<R::Database>,
{
    fn run(&self) -> Result<RunRecord, LogError> {
        RunRow::from_row(self).map_err(db)?.record()
    }

    fn step(&self) -> Result<StepRecord, LogError> {
        StepRow::from_row(self).map_err(db)?.record()
    }

    fn event(&self) -> Result<Event, LogError> {
        Ok(EventRow::from_row(self).map_err(db)?.record())
    }

    fn delivery(&self) -> Result<DeliveryRecord, LogError> {
        Ok(DeliveryRow::from_row(self).map_err(db)?.record())
    }

    fn job_run(&self) -> Result<JobRunRecord, LogError> {
        JobRunRow::from_row(self).map_err(db)?.record()
    }

    fn text(&self, column: &str) -> Result<String, LogError> {
        self.try_get(column).map_err(db)
    }

    fn int(&self, column: &str) -> Result<i64, LogError> {
        self.try_get(column).map_err(db)
    }

    fn json(&self, column: &str) -> Result<Option<Value>, LogError> {
        let v: Option<Json<Value>> = self.try_get(column).map_err(db)?;
        Ok(v.map(|j| j.0))
    }
}
