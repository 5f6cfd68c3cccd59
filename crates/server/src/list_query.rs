//! A list route's query, read once: paging (`offset`, `limit`), ordering (`order`) and the
//! filter (fields, operators, `$and`/`$or` groups, `q`, `metadata[…]`), each bounded, as the
//! [`ListQuery`] extractor. A list handler takes it and is left with the read and the answer.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use utoipa::IntoParams;

use keyward::{
    ApiKeyField, Error, Field, Filter, ListOptions, Op, Order, SalesChannelField, Timestamp, Value as FilterValue,
};

use crate::error::{ApiError, ApiResult};
use crate::extract::TypedQuery;
use crate::validate::{number, string};

/// A list query checked against `Q`'s parameters, as a filter and options on the fields `F`.
#[derive(Debug)]
pub struct ListQuery<Q, F> {
    /// The query as its type reads it (`fields`, …).
    pub query: Q,
    pub filter: Filter<F>,
    pub options: ListOptions<F>,
    pub offset: u64,
    pub limit: u64,
}

/// A field a list filters on, with what its text values must be.
pub trait ListField: Field {
    /// Refuses a text value this field cannot hold (a key's `type` is `publishable` or `secret`).
    fn check_text(self, _text: &str) -> ApiResult<()> {
        Ok(())
    }
}

impl ListField for ApiKeyField {
    fn check_text(self, text: &str) -> ApiResult<()> {
        if self == ApiKeyField::Type && !["publishable", "secret"].contains(&text) {
            return Err(ApiError::invalid(format!(
                "Invalid request: Expected: 'publishable, secret' for field 'type', but got: '{text}'"
            )));
        }
        Ok(())
    }
}

impl ListField for SalesChannelField {}

impl<S, Q, F> FromRequestParts<S> for ListQuery<Q, F>
where
    S: Send + Sync,
    Q: DeserializeOwned + IntoParams + 'static,
    F: ListField,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let TypedQuery { query, raw } = TypedQuery::<Q>::from_request_parts(parts, state).await?;
        let (options, offset, limit) = page::<F>(&raw)?;
        let filter = bounded_filter(&raw, &filter_fields::<Q>())?;
        Ok(Self {
            query,
            filter,
            options,
            offset,
            limit,
        })
    }
}

/// The most `order` terms a list takes.
pub const MAX_ORDER_TERMS: usize = 10;
/// The most `$and`/`$or` groups a list's filter holds, nested ones included.
pub const MAX_FILTER_GROUPS: usize = 50;
/// The most values one `$in`/`$nin` (or a list of values) names.
pub const MAX_IN_VALUES: usize = 1_000;

/// `offset`, `limit` (default 20) and `order` of a list query.
fn page<F: Field>(q: &Map<String, Value>) -> ApiResult<(ListOptions<F>, u64, u64)> {
    let count = |name: &str, default: u64| -> ApiResult<u64> {
        match number(q, name) {
            None => Ok(default),
            Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= 1e15 => Ok(n as u64),
            Some(_) => Err(ApiError::invalid(format!(
                "Invalid request: Expected a non-negative whole number for field '{name}', got: '{}'",
                string(q, name).unwrap_or_default()
            ))),
        }
    };
    let (offset, limit) = (count("offset", 0)?, count("limit", 20)?);
    let mut options = ListOptions::page(offset, limit);
    if let Some(order) = string(q, "order").filter(|o| !o.is_empty()) {
        let terms = order.split(',').count();
        if terms > MAX_ORDER_TERMS {
            return Err(ApiError::invalid(format!(
                "Invalid request: order takes at most {MAX_ORDER_TERMS} terms, but got {terms}"
            )));
        }
        for item in order.split(',') {
            options.order.push(
                Order::parse(item.trim()).map_err(|e| ApiError::invalid(format!("Invalid request: {}", e.message)))?,
            );
        }
    }
    Ok((options, offset, limit))
}

/// The filterable fields of a list query: its parameters but paging, ordering, selection,
/// search and the groups.
fn filter_fields<T: utoipa::IntoParams + 'static>() -> Vec<String> {
    const NOT_FILTERS: &[&str] = &["fields", "offset", "limit", "order", "with_deleted", "q", "$and", "$or"];
    crate::validate::query_specs::<T>()
        .iter()
        .map(|s| s.name.clone())
        .filter(|n| !NOT_FILTERS.contains(&n.as_str()))
        .collect()
}

/// How many `$and`/`$or` groups a query holds, nested ones included.
fn groups_in(q: &Map<String, Value>) -> usize {
    q.iter()
        .filter(|(name, _)| *name == "$and" || *name == "$or")
        .map(|(_, v)| match v {
            Value::Array(items) => {
                items.len() + items.iter().filter_map(Value::as_object).map(groups_in).sum::<usize>()
            }
            Value::Object(m) => 1 + groups_in(m),
            _ => 0,
        })
        .sum()
}

/// [`filter_from`], after refusing a query with more groups than [`MAX_FILTER_GROUPS`].
fn bounded_filter<F: ListField>(q: &Map<String, Value>, allowed: &[String]) -> ApiResult<Filter<F>> {
    let groups = groups_in(q);
    if groups > MAX_FILTER_GROUPS {
        return Err(ApiError::invalid(format!(
            "Invalid request: a filter holds at most {MAX_FILTER_GROUPS} $and/$or groups, but got {groups}"
        )));
    }
    filter_from(q, allowed)
}

/// Builds a filter from a validated query (recursing into `$and`/`$or`). `allowed` are the
/// filterable fields; [`ListField::check_text`] validates a field's text values.
fn filter_from<F: ListField>(q: &Map<String, Value>, allowed: &[String]) -> ApiResult<Filter<F>> {
    let mut f = Filter::new();
    for (name, value) in q {
        match name.as_str() {
            "q" => f.q = value.as_str().map(str::to_owned),
            "$and" | "$or" => {
                let groups = match value {
                    Value::Array(items) => items.clone(),
                    Value::Object(_) => vec![value.clone()],
                    _ => {
                        return Err(ApiError::invalid(format!(
                            "Invalid request: '{name}' takes a list of filters"
                        )));
                    }
                };
                for g in groups {
                    let Value::Object(m) = g else {
                        return Err(ApiError::invalid(format!(
                            "Invalid request: '{name}' takes a list of filters"
                        )));
                    };
                    let unknown: Vec<&String> = m
                        .keys()
                        .filter(|k| !allowed.contains(k) && !k.starts_with('$') && *k != "q")
                        .collect();
                    if !unknown.is_empty() {
                        let names: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
                        return Err(ApiError::invalid(format!(
                            "Invalid request: Unrecognized fields: '{}'",
                            names.join(", ")
                        )));
                    }
                    let group = filter_from(&m, allowed)?;
                    if name == "$and" {
                        f.and.push(group)
                    } else {
                        f.or.push(group)
                    }
                }
            }
            "metadata" if allowed.iter().any(|a| a == "metadata") => push_metadata(&mut f, value)?,
            field if allowed.iter().any(|a| a == field) => {
                let Some(field) = F::from_name(field) else { continue };
                push_conditions(&mut f, field, value)?;
            }
            _ => {}
        }
    }
    Ok(f)
}

/// `metadata[name]=value` (several names may be given): the metadata holds that string.
fn push_metadata<F: Field>(f: &mut Filter<F>, value: &Value) -> ApiResult<()> {
    let refused = || ApiError::invalid("Invalid request: metadata filters take metadata[key]=value");
    let Value::Object(pairs) = value else {
        return Err(refused());
    };
    for (name, v) in pairs {
        let Value::String(text) = v else {
            return Err(refused());
        };
        f.push_metadata(name, text.clone()).map_err(invalid_filter)?;
    }
    Ok(())
}

fn push_conditions<F: ListField>(f: &mut Filter<F>, field: F, value: &Value) -> ApiResult<()> {
    let one = |v: &Value| -> ApiResult<FilterValue> { filter_value(field, v) };
    let many = |v: &Value| -> ApiResult<Vec<FilterValue>> {
        match v {
            Value::Array(items) if items.len() > MAX_IN_VALUES => Err(ApiError::invalid(format!(
                "Invalid request: a list of values for field '{}' holds at most {MAX_IN_VALUES}, but got {}",
                field.name(),
                items.len()
            ))),
            Value::Array(items) => items.iter().map(one).collect(),
            other => Ok(vec![one(other)?]),
        }
    };
    match value {
        Value::Object(ops) => {
            for (op_name, v) in ops {
                let op = Op::from_name(op_name).ok_or_else(|| {
                    ApiError::invalid(format!(
                        "Invalid request: Unknown operator '{op_name}' for field '{}'",
                        field.name()
                    ))
                })?;
                let values = if matches!(op, Op::In | Op::Nin) {
                    many(v)?
                } else {
                    vec![one(v)?]
                };
                f.push(field, op, values).map_err(invalid_filter)?;
            }
            Ok(())
        }
        Value::Array(_) => f.push(field, Op::In, many(value)?).map_err(invalid_filter),
        other => f.push(field, Op::Eq, vec![one(other)?]).map_err(invalid_filter),
    }
}

fn invalid_filter(e: Error) -> ApiError {
    ApiError::invalid(format!("Invalid request: {}", e.message))
}

fn filter_value<F: ListField>(field: F, v: &Value) -> ApiResult<FilterValue> {
    let text = match v {
        Value::String(s) => s.as_str(),
        Value::Null => return Ok(FilterValue::Null),
        _ => {
            return Err(ApiError::invalid(format!(
                "Invalid request: Expected a string for field '{}'",
                field.name()
            )));
        }
    };
    match field.kind() {
        _ if text == "null" => Ok(FilterValue::Null),
        keyward::filter::FieldKind::Text => {
            field.check_text(text)?;
            Ok(FilterValue::Text(text.to_owned()))
        }
        keyward::filter::FieldKind::Time => Timestamp::parse(text).map(FilterValue::Time).ok_or_else(|| {
            ApiError::invalid(format!(
                "Invalid request: Expected a date for field '{}', got: '{text}'",
                field.name()
            ))
        }),
        keyward::filter::FieldKind::Bool => match text {
            "true" => Ok(FilterValue::Bool(true)),
            "false" => Ok(FilterValue::Bool(false)),
            _ => Err(ApiError::invalid(format!(
                "Invalid request: Expected type: 'boolean' for field '{}', got: '{text}'",
                field.name()
            ))),
        },
    }
}
