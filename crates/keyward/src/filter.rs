//! Filters, order and pagination for lists, in Medusa's vocabulary.
//!
//! A filter is a conjunction of conditions (`field op value`) plus `$and`/`$or` groups and a
//! free-text `q`. It is data, not SQL: the stores render it with [`crate::sql`], so both backends
//! answer the same filter the same way, and bad combinations (`$like` on a date) are refused when
//! the filter is built, not when a query fails.

use std::fmt;

use crate::error::{Error, Result};
use crate::time::Timestamp;

/// How values of a field compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    Time,
    Bool,
}

/// A filterable, orderable column of some record.
pub trait Field: Copy + fmt::Debug + PartialEq + Send + Sync + 'static {
    /// The column in SQL (named as the API names it). Static strings only: never user input.
    fn column(self) -> &'static str {
        self.name()
    }
    fn kind(self) -> FieldKind;
    /// The field's name in the API (`created_at`).
    fn name(self) -> &'static str;
    /// Every field, for parsing names.
    const ALL: &'static [Self];
    /// The columns `q` searches.
    const SEARCHED: &'static [Self];
    /// The default order and the tie-breaker.
    const ID: Self;

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|f| f.name() == name)
    }
}

/// The columns of an API key that lists filter and order on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyField {
    Id,
    Title,
    Token,
    Redacted,
    Type,
    CreatedBy,
    RevokedBy,
    LastUsedAt,
    RevokedAt,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
    ExpiresAt,
}

impl Field for ApiKeyField {
    fn kind(self) -> FieldKind {
        use ApiKeyField::*;
        match self {
            Id | Title | Token | Redacted | Type | CreatedBy | RevokedBy => FieldKind::Text,
            LastUsedAt | RevokedAt | CreatedAt | UpdatedAt | DeletedAt | ExpiresAt => FieldKind::Time,
        }
    }

    fn name(self) -> &'static str {
        use ApiKeyField::*;
        match self {
            Id => "id",
            Title => "title",
            Token => "token",
            Redacted => "redacted",
            Type => "type",
            CreatedBy => "created_by",
            RevokedBy => "revoked_by",
            LastUsedAt => "last_used_at",
            RevokedAt => "revoked_at",
            CreatedAt => "created_at",
            UpdatedAt => "updated_at",
            DeletedAt => "deleted_at",
            ExpiresAt => "expires_at",
        }
    }

    const ALL: &'static [Self] = {
        use ApiKeyField::*;
        &[
            Id, Title, Token, Redacted, Type, CreatedBy, RevokedBy, LastUsedAt, RevokedAt, CreatedAt, UpdatedAt,
            DeletedAt, ExpiresAt,
        ]
    };
    const SEARCHED: &'static [Self] = &[Self::Title, Self::Redacted];
    const ID: Self = Self::Id;
}

/// The columns of a sales channel that lists filter and order on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SalesChannelField {
    Id,
    Name,
    Description,
    IsDisabled,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

impl Field for SalesChannelField {
    fn kind(self) -> FieldKind {
        use SalesChannelField::*;
        match self {
            Id | Name | Description => FieldKind::Text,
            IsDisabled => FieldKind::Bool,
            CreatedAt | UpdatedAt | DeletedAt => FieldKind::Time,
        }
    }

    fn name(self) -> &'static str {
        use SalesChannelField::*;
        match self {
            Id => "id",
            Name => "name",
            Description => "description",
            IsDisabled => "is_disabled",
            CreatedAt => "created_at",
            UpdatedAt => "updated_at",
            DeletedAt => "deleted_at",
        }
    }

    const ALL: &'static [Self] = {
        use SalesChannelField::*;
        &[Id, Name, Description, IsDisabled, CreatedAt, UpdatedAt, DeletedAt]
    };
    const SEARCHED: &'static [Self] = &[Self::Name, Self::Description];
    const ID: Self = Self::Id;
}

/// A comparison operator (`$eq`, `$in`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    In,
    Nin,
    Gt,
    Gte,
    Lt,
    Lte,
    Like,
    ILike,
}

impl Op {
    pub const ALL: [Op; 10] = [
        Op::Eq,
        Op::Ne,
        Op::In,
        Op::Nin,
        Op::Gt,
        Op::Gte,
        Op::Lt,
        Op::Lte,
        Op::Like,
        Op::ILike,
    ];

    /// `$eq`, `$ilike`, …
    pub fn name(self) -> &'static str {
        match self {
            Op::Eq => "$eq",
            Op::Ne => "$ne",
            Op::In => "$in",
            Op::Nin => "$nin",
            Op::Gt => "$gt",
            Op::Gte => "$gte",
            Op::Lt => "$lt",
            Op::Lte => "$lte",
            Op::Like => "$like",
            Op::ILike => "$ilike",
        }
    }

    pub fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.name() == name)
    }
}

/// A value in a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Text(String),
    Time(Timestamp),
    Bool(bool),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Text(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Text(s)
    }
}

impl From<Timestamp> for Value {
    fn from(t: Timestamp) -> Self {
        Value::Time(t)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One `field op value(s)` test. Built only through [`Filter::push`], which checks it.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition<F> {
    pub field: F,
    pub op: Op,
    /// One value, or any number for `$in`/`$nin`.
    pub values: Vec<Value>,
}

/// A filter over records whose columns are `F`.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter<F> {
    /// Case-insensitive substring over the searched columns.
    pub q: Option<String>,
    pub conditions: Vec<Condition<F>>,
    /// Every group must match.
    pub and: Vec<Filter<F>>,
    /// At least one group must match (when there are any).
    pub or: Vec<Filter<F>>,
    /// `(name, value)`: the record's metadata holds the string `value` under the top-level key
    /// `name` (`metadata[plan]=pro`).
    pub metadata: Vec<(String, String)>,
}

impl<F> Default for Filter<F> {
    fn default() -> Self {
        Self {
            q: None,
            conditions: Vec::new(),
            and: Vec::new(),
            or: Vec::new(),
            metadata: Vec::new(),
        }
    }
}

pub type ApiKeyFilter = Filter<ApiKeyField>;
pub type SalesChannelFilter = Filter<SalesChannelField>;

impl<F: Field> Filter<F> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `field op values`, refusing combinations that mean nothing (`$gt null`, `$like` on a
    /// date, a text value for a date column).
    pub fn push(&mut self, field: F, op: Op, values: Vec<Value>) -> Result<()> {
        let list_op = matches!(op, Op::In | Op::Nin);
        if !list_op && values.len() != 1 {
            return Err(Error::invalid_data(format!(
                "Operator '{}' on field '{}' takes exactly one value",
                op.name(),
                field.name()
            )));
        }
        for v in &values {
            let fits = match (v, field.kind()) {
                (Value::Null, _) => matches!(op, Op::Eq | Op::Ne),
                (Value::Text(_), FieldKind::Text) => true,
                (Value::Time(_), FieldKind::Time) => !matches!(op, Op::Like | Op::ILike),
                (Value::Bool(_), FieldKind::Bool) => matches!(op, Op::Eq | Op::Ne | Op::In | Op::Nin),
                _ => false,
            };
            if !fits {
                return Err(Error::invalid_data(format!(
                    "Operator '{}' cannot compare field '{}' with {}",
                    op.name(),
                    field.name(),
                    describe(v)
                )));
            }
        }
        self.conditions.push(Condition { field, op, values });
        Ok(())
    }

    /// `field = value` (or `IS NULL` for `Value::Null`). Infallible for well-typed values; a
    /// mistyped one is refused by [`Filter::push`] and reported by `try_eq`.
    pub fn try_eq(mut self, field: F, value: impl Into<Value>) -> Result<Self> {
        self.push(field, Op::Eq, vec![value.into()])?;
        Ok(self)
    }

    /// `field IN (values)`.
    pub fn try_in<V: Into<Value>>(mut self, field: F, values: impl IntoIterator<Item = V>) -> Result<Self> {
        self.push(field, Op::In, values.into_iter().map(Into::into).collect())?;
        Ok(self)
    }

    /// Records whose metadata holds the string `value` under `name` (a name metadata may have).
    pub fn push_metadata(&mut self, name: &str, value: impl Into<String>) -> Result<()> {
        if !crate::policy::metadata_key_ok(name) {
            return Err(Error::invalid_data(format!(
                "Cannot filter on metadata key {name:?}: a metadata key is 1 to {} letters, digits or _ - . :",
                crate::policy::MAX_METADATA_KEY_LEN
            )));
        }
        self.metadata.push((name.to_owned(), value.into()));
        Ok(())
    }

    pub fn with_q(mut self, q: impl Into<String>) -> Self {
        self.q = Some(q.into());
        self
    }

    pub fn is_empty(&self) -> bool {
        self.q.is_none()
            && self.conditions.is_empty()
            && self.and.is_empty()
            && self.or.is_empty()
            && self.metadata.is_empty()
    }

    /// Rewrites every value of `field`, recursively (used to turn raw secret tokens into digests).
    pub fn map_text_values(&mut self, field: F, f: &impl Fn(&str) -> String) {
        for c in self.conditions.iter_mut().filter(|c| c.field == field) {
            if matches!(c.op, Op::Like | Op::ILike) {
                continue;
            }
            for v in c.values.iter_mut() {
                if let Value::Text(s) = v {
                    *s = f(s);
                }
            }
        }
        for g in self.and.iter_mut().chain(self.or.iter_mut()) {
            g.map_text_values(field, f);
        }
    }
}

impl ApiKeyFilter {
    /// Keys with these ids.
    pub fn ids<I: AsRef<str>>(ids: impl IntoIterator<Item = I>) -> Self {
        let values = ids.into_iter().map(|i| Value::Text(i.as_ref().to_owned())).collect();
        Self {
            conditions: vec![Condition {
                field: ApiKeyField::Id,
                op: Op::In,
                values,
            }],
            ..Self::default()
        }
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Text(_) => "a string",
        Value::Time(_) => "a date",
        Value::Bool(_) => "a boolean",
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Asc,
    Desc,
}

/// One sort key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Order<F> {
    pub field: F,
    pub direction: Direction,
}

impl<F: Field> Order<F> {
    /// Parses `field` or `-field` (Medusa's `order` query parameter).
    pub fn parse(s: &str) -> Result<Self> {
        let (direction, name) = match s.strip_prefix('-') {
            Some(rest) => (Direction::Desc, rest),
            None => (Direction::Asc, s.strip_prefix('+').unwrap_or(s)),
        };
        let field = F::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = F::ALL.iter().map(|f| f.name()).collect();
            Error::invalid_data(format!(
                "Cannot order by '{name}': expected one of {}",
                names.join(", ")
            ))
        })?;
        Ok(Self { field, direction })
    }
}

/// Order and page of a list. `take: None` means every row.
#[derive(Debug, Clone, PartialEq)]
pub struct ListOptions<F> {
    pub order: Vec<Order<F>>,
    pub skip: u64,
    pub take: Option<u64>,
}

impl<F> Default for ListOptions<F> {
    fn default() -> Self {
        Self {
            order: Vec::new(),
            skip: 0,
            take: None,
        }
    }
}

impl<F: Field> ListOptions<F> {
    pub fn page(skip: u64, take: u64) -> Self {
        Self {
            order: Vec::new(),
            skip,
            take: Some(take),
        }
    }

    pub fn ordered_by(mut self, field: F, direction: Direction) -> Self {
        self.order.push(Order { field, direction });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_on_a_date_is_refused_when_the_filter_is_built() {
        let mut f = ApiKeyFilter::new();
        let err = f
            .push(ApiKeyField::CreatedAt, Op::Like, vec!["2024%".into()])
            .unwrap_err();
        assert_eq!(
            err.message,
            "Operator '$like' cannot compare field 'created_at' with a string"
        );
        assert!(f.push(ApiKeyField::RevokedAt, Op::Gt, vec![Value::Null]).is_err());
        assert!(f.push(ApiKeyField::RevokedAt, Op::Eq, vec![Value::Null]).is_ok());
    }

    #[test]
    fn order_parses_a_leading_minus_as_descending() {
        let o = Order::<ApiKeyField>::parse("-created_at").unwrap();
        assert_eq!((o.field, o.direction), (ApiKeyField::CreatedAt, Direction::Desc));
        assert!(Order::<ApiKeyField>::parse("bogus").is_err());
        assert!(Order::<ApiKeyField>::parse("salt").is_err());
    }
}
