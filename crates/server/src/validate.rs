//! Strict validation of request bodies and query strings, with Medusa's messages.
//!
//! A schema is a list of fields. Issues are collected in schema order (missing, wrong type, not in
//! the enum), then unknown fields as one issue; the first three are joined by `; ` after
//! `Invalid request: `, which is what Medusa clients and tests match on.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// What a field accepts.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    String,
    /// A JSON number in a body; a decimal string in a query.
    Number,
    Boolean,
    StringArray,
    Enum(&'static [&'static str]),
    /// Anything (validated further by the route).
    Any,
}

/// One field of a schema.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub ty: Ty,
    pub required: bool,
    /// `null` is accepted (and means "clear").
    pub nullable: bool,
}

pub const fn req(name: &'static str, ty: Ty) -> Spec {
    Spec {
        name,
        ty,
        required: true,
        nullable: false,
    }
}

pub const fn opt(name: &'static str, ty: Ty) -> Spec {
    Spec {
        name,
        ty,
        required: false,
        nullable: false,
    }
}

pub const fn nullable(name: &'static str, ty: Ty) -> Spec {
    Spec {
        name,
        ty,
        required: false,
        nullable: true,
    }
}

/// How a value is shown in a message: strings as themselves, everything else as JSON.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(_) => "array".to_owned(),
        Value::Object(_) => "object".to_owned(),
        other => other.to_string(),
    }
}

fn type_name(ty: Ty) -> &'static str {
    match ty {
        Ty::String | Ty::Enum(_) => "string",
        Ty::Number => "number",
        Ty::Boolean => "boolean",
        Ty::StringArray => "array",
        Ty::Any => "any",
    }
}

fn check(spec: &Spec, v: &Value, from_query: bool) -> Option<String> {
    if v.is_null() && spec.nullable {
        return None;
    }
    let ok = match (spec.ty, v) {
        (Ty::Any, _) => true,
        (Ty::String, Value::String(_)) => true,
        (Ty::Number, Value::Number(_)) => true,
        (Ty::Number, Value::String(s)) if from_query => s.trim().parse::<f64>().is_ok_and(f64::is_finite),
        (Ty::Boolean, Value::Bool(_)) => true,
        (Ty::Boolean, Value::String(s)) if from_query => matches!(s.as_str(), "true" | "false"),
        (Ty::StringArray, Value::Array(items)) => items.iter().all(Value::is_string),
        (Ty::Enum(allowed), Value::String(s)) => {
            if allowed.contains(&s.as_str()) {
                true
            } else {
                return Some(format!(
                    "Expected: '{}' for field '{}', but got: '{}'",
                    allowed.join(", "),
                    spec.name,
                    s
                ));
            }
        }
        _ => false,
    };
    if ok {
        None
    } else {
        Some(format!(
            "Expected type: '{}' for field '{}', got: '{}'",
            type_name(spec.ty),
            spec.name,
            shown(v)
        ))
    }
}

/// Validates `value` against `schema`; returns its fields on success.
pub fn validate(value: &Value, schema: &[Spec], from_query: bool) -> Result<Map<String, Value>, ApiError> {
    let Value::Object(map) = value else {
        return Err(invalid(vec!["Field '' is required".to_owned()]));
    };
    let mut issues = Vec::new();
    for spec in schema {
        match map.get(spec.name) {
            None if spec.required => issues.push(format!("Field '{}' is required", spec.name)),
            None => {}
            Some(v) => issues.extend(check(spec, v, from_query)),
        }
    }
    let unknown: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !schema.iter().any(|s| s.name == *k))
        .collect();
    if !unknown.is_empty() {
        issues.push(format!("Unrecognized fields: '{}'", unknown.join(", ")));
    }
    if issues.is_empty() {
        Ok(map.clone())
    } else {
        Err(invalid(issues))
    }
}

fn invalid(issues: Vec<String>) -> ApiError {
    let shown: Vec<String> = issues.into_iter().take(3).collect();
    ApiError::invalid(format!("Invalid request: {}", shown.join("; ")))
}

/// A number field of a validated map (query strings carry numbers as text).
pub fn number(map: &Map<String, Value>, name: &str) -> Option<f64> {
    match map.get(name)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub fn string(map: &Map<String, Value>, name: &str) -> Option<String> {
    map.get(name).and_then(Value::as_str).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CREATE: &[Spec] = &[
        req("title", Ty::String),
        req("type", Ty::Enum(&["publishable", "secret"])),
    ];

    fn message(v: Value) -> String {
        match validate(&v, CREATE, false).unwrap_err() {
            ApiError::Module(e) => e.message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn messages_match_medusas() {
        assert_eq!(
            message(json!({})),
            "Invalid request: Field 'title' is required; Field 'type' is required"
        );
        assert_eq!(
            message(json!({"title": 123, "type": "secret"})),
            "Invalid request: Expected type: 'string' for field 'title', got: '123'"
        );
        assert_eq!(
            message(json!({"title": null, "type": "secret"})),
            "Invalid request: Expected type: 'string' for field 'title', got: 'null'"
        );
        assert_eq!(
            message(json!({"type": "nope"})),
            "Invalid request: Field 'title' is required; Expected: 'publishable, secret' for field 'type', but got: 'nope'"
        );
        assert_eq!(
            message(json!({"title": "t", "type": "secret", "foo": 1, "token": "x"})),
            "Invalid request: Unrecognized fields: 'foo, token'"
        );
        assert_eq!(message(json!([])), "Invalid request: Field '' is required");
    }
}
