//! Query strings in the `qs` style Medusa clients send: `a=1&a=2` (a list), `a[]=1`,
//! `created_at[$gt]=…`, `$or[0][title]=…`. Parsed into JSON so the same strict validation as
//! bodies applies.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// The deepest nesting accepted; deeper keys are refused rather than built.
const MAX_DEPTH: usize = 5;
/// The largest list index accepted (`a[1000]` would otherwise allocate 1000 slots).
const MAX_INDEX: usize = 100;

/// Parses a raw query string.
pub fn parse(raw: Option<&str>) -> Result<Value, ApiError> {
    let mut root = Value::Object(Map::new());
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let path = split_key(&key)?;
        insert(&mut root, &path, Value::String(value.into_owned()), &key)?;
    }
    Ok(root)
}

/// `a[b][0]` → `["a", "b", "0"]`; `a[]` → `["a", ""]`.
fn split_key(key: &str) -> Result<Vec<String>, ApiError> {
    let (head, mut rest) = match key.find('[') {
        Some(i) => (&key[..i], &key[i..]),
        None => (key, ""),
    };
    let mut path = vec![head.to_owned()];
    while !rest.is_empty() {
        let close = rest
            .find(']')
            .filter(|_| rest.starts_with('['))
            .ok_or_else(|| ApiError::invalid(format!("Invalid request: malformed query parameter '{key}'")))?;
        path.push(rest[1..close].to_owned());
        rest = &rest[close + 1..];
        if path.len() > MAX_DEPTH {
            return Err(ApiError::invalid(format!(
                "Invalid request: query parameter '{key}' is nested too deeply"
            )));
        }
    }
    Ok(path)
}

fn conflict(key: &str) -> ApiError {
    ApiError::invalid(format!(
        "Invalid request: query parameter '{key}' conflicts with another"
    ))
}

fn insert(node: &mut Value, path: &[String], value: Value, key: &str) -> Result<(), ApiError> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(());
    };
    if rest.is_empty() {
        return set_leaf(node, first, value, key);
    }
    // The child container: a list when the next segment is an index or empty.
    let next_is_list = rest[0].is_empty() || rest[0].parse::<usize>().is_ok();
    let fresh = || {
        if next_is_list {
            Value::Array(Vec::new())
        } else {
            Value::Object(Map::new())
        }
    };
    let child = match node {
        Value::Object(map) => map.entry(first.clone()).or_insert_with(fresh),
        Value::Array(items) => {
            let i = if first.is_empty() {
                items.len()
            } else {
                index(first, key)?
            };
            grow(items, i);
            if items[i].is_null() {
                items[i] = fresh();
            }
            &mut items[i]
        }
        _ => return Err(conflict(key)),
    };
    if child.is_string() {
        return Err(conflict(key));
    }
    insert(child, rest, value, key)
}

/// The last segment: a field of an object (a repeated one becomes a list), or an item of a list.
fn set_leaf(node: &mut Value, segment: &str, value: Value, key: &str) -> Result<(), ApiError> {
    match node {
        Value::Object(map) => {
            match map.get_mut(segment) {
                None => {
                    map.insert(segment.to_owned(), value);
                }
                Some(Value::Array(items)) => items.push(value),
                Some(existing @ Value::String(_)) => {
                    let prev = existing.take();
                    *existing = Value::Array(vec![prev, value]);
                }
                Some(_) => return Err(conflict(key)),
            }
            Ok(())
        }
        Value::Array(items) => {
            if segment.is_empty() {
                items.push(value);
            } else {
                let i = index(segment, key)?;
                grow(items, i);
                items[i] = value;
            }
            Ok(())
        }
        _ => Err(conflict(key)),
    }
}

fn index(segment: &str, key: &str) -> Result<usize, ApiError> {
    match segment.parse::<usize>() {
        Ok(i) if i <= MAX_INDEX => Ok(i),
        _ => Err(ApiError::invalid(format!(
            "Invalid request: bad list index in query parameter '{key}'"
        ))),
    }
}

fn grow(items: &mut Vec<Value>, i: usize) {
    if items.len() <= i {
        items.resize(i + 1, Value::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn qs_style_keys_become_nested_json() {
        assert_eq!(parse(Some("a=1&a=2&b=x")).unwrap(), json!({"a": ["1", "2"], "b": "x"}));
        assert_eq!(
            parse(Some("revoked_at[%24gt]=2024")).unwrap(),
            json!({"revoked_at": {"$gt": "2024"}})
        );
        assert_eq!(parse(Some("id[]=a&id[]=b")).unwrap(), json!({"id": ["a", "b"]}));
        assert_eq!(
            parse(Some("$or[0][title]=a&$or[1][type]=secret")).unwrap(),
            json!({"$or": [{"title": "a"}, {"type": "secret"}]})
        );
        assert_eq!(parse(None).unwrap(), json!({}));
    }

    #[test]
    fn hostile_keys_are_refused_not_built() {
        assert!(parse(Some("a[0]=1&a[b]=2")).is_err(), "a list cannot take a named key");
        assert!(parse(Some("a[999999999]=1")).is_err());
        assert!(parse(Some("a[b][c][d][e][f][g]=1")).is_err());
        assert!(parse(Some("a[b=1")).is_err());
        assert!(parse(Some("a=1&a[b]=2")).is_err());
    }
}
