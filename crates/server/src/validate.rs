//! Strict validation of request bodies and query strings, with Medusa's messages.
//!
//! A schema is a list of fields. Issues are collected in schema order (missing, wrong type, not in
//! the enum), then unknown fields as one issue; the first three are joined by `; ` after
//! `Invalid request: `, which is what Medusa clients and tests match on.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use serde_json::{Map, Value};

use crate::error::ApiError;

/// What a field accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum Ty {
    String,
    /// A JSON number in a body; a decimal string in a query.
    Number,
    Boolean,
    StringArray,
    /// A JSON object (a record such as `metadata`).
    Object,
    Enum(Vec<String>),
    /// Anything (validated further by the route).
    Any,
}

/// One field of a schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub name: String,
    pub ty: Ty,
    pub required: bool,
    /// `null` is accepted (and means "clear").
    pub nullable: bool,
}

/// The specs of type `T`, derived once and kept: a type's schema cannot change while the
/// process runs, so a request pays a map lookup, not a schema build.
fn cached<T: 'static>(derive: impl FnOnce() -> Vec<Spec>) -> Arc<[Spec]> {
    static CACHE: OnceLock<RwLock<HashMap<TypeId, Arc<[Spec]>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(specs) = cache.read().ok().and_then(|c| c.get(&TypeId::of::<T>()).cloned()) {
        return specs;
    }
    let specs: Arc<[Spec]> = derive().into();
    if let Ok(mut c) = cache.write() {
        c.insert(TypeId::of::<T>(), Arc::clone(&specs));
    }
    specs
}

/// The fields of a request body type, read from its OpenAPI schema (in declaration order).
pub fn body_specs<T: utoipa::PartialSchema + 'static>() -> Arc<[Spec]> {
    cached::<T>(derive_body_specs::<T>)
}

fn derive_body_specs<T: utoipa::PartialSchema>() -> Vec<Spec> {
    let schema = serde_json::to_value(T::schema()).unwrap_or_default();
    let required = |name: &str| {
        schema["required"]
            .as_array()
            .is_some_and(|r| r.iter().any(|n| n == name))
    };
    match schema["properties"].as_object() {
        Some(properties) => properties
            .iter()
            .map(|(name, property)| spec_of(name, property, required(name)))
            .collect(),
        None => Vec::new(),
    }
}

/// The parameters of a query type, read from its OpenAPI parameters (in declaration order).
pub fn query_specs<T: utoipa::IntoParams + 'static>() -> Arc<[Spec]> {
    cached::<T>(derive_query_specs::<T>)
}

fn derive_query_specs<T: utoipa::IntoParams>() -> Vec<Spec> {
    T::into_params(|| None)
        .into_iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .filter_map(|p| {
            let name = p["name"].as_str()?.to_owned();
            Some(spec_of(&name, &p["schema"], p["required"] == Value::Bool(true)))
        })
        .collect()
}

/// One property's spec: its JSON-schema type (with `null` making it nullable), or anything.
fn spec_of(name: &str, schema: &Value, required: bool) -> Spec {
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let enumerated = schema["enum"]
        .as_array()
        .map(|values| values.iter().filter_map(Value::as_str).map(str::to_owned).collect());
    let ty = match (types.iter().find(|t| **t != "null"), enumerated) {
        (Some(&"string"), Some(values)) => Ty::Enum(values),
        (Some(&"string"), None) => Ty::String,
        (Some(&"number" | &"integer"), _) => Ty::Number,
        (Some(&"boolean"), _) => Ty::Boolean,
        (Some(&"array"), _) => Ty::StringArray,
        (Some(&"object"), _) => Ty::Object,
        _ => Ty::Any,
    };
    Spec {
        name: name.to_owned(),
        ty,
        required,
        nullable: types.contains(&"null"),
    }
}

/// A validated query with its numbers and booleans as JSON values (a query carries them as
/// text), ready for serde.
pub fn typed_query(mut map: Map<String, Value>, specs: &[Spec]) -> Map<String, Value> {
    for spec in specs {
        let Some(Value::String(text)) = map.get(&spec.name) else {
            continue;
        };
        let typed = match spec.ty {
            Ty::Number => text
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number),
            Ty::Boolean => Some(Value::Bool(text == "true")),
            _ => None,
        };
        if let Some(v) = typed {
            map.insert(spec.name.clone(), v);
        }
    }
    map
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

fn type_name(ty: &Ty) -> &'static str {
    match ty {
        Ty::String | Ty::Enum(_) => "string",
        Ty::Number => "number",
        Ty::Boolean => "boolean",
        Ty::StringArray => "array",
        Ty::Object => "object",
        Ty::Any => "any",
    }
}

fn check(spec: &Spec, v: &Value, from_query: bool) -> Option<String> {
    if v.is_null() && spec.nullable {
        return None;
    }
    let ok = match (&spec.ty, v) {
        (Ty::Any, _) => true,
        (Ty::String, Value::String(_)) => true,
        (Ty::Number, Value::Number(_)) => true,
        (Ty::Number, Value::String(s)) if from_query => s.trim().parse::<f64>().is_ok_and(f64::is_finite),
        (Ty::Boolean, Value::Bool(_)) => true,
        (Ty::Boolean, Value::String(s)) if from_query => matches!(s.as_str(), "true" | "false"),
        (Ty::StringArray, Value::Array(items)) => items.iter().all(Value::is_string),
        (Ty::Object, Value::Object(_)) => true,
        (Ty::Enum(allowed), Value::String(s)) => {
            if allowed.contains(s) {
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
            type_name(&spec.ty),
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
        match map.get(&spec.name) {
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

    fn message(v: Value) -> String {
        match validate(&v, &body_specs::<crate::wire::CreateKeyBody>(), false).unwrap_err() {
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
        let channel = |v: Value| match validate(&v, &body_specs::<crate::wire::CreateChannelBody>(), false) {
            Err(ApiError::Module(e)) => e.message,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            channel(json!({"name": "w", "metadata": [1]})),
            "Invalid request: Expected type: 'object' for field 'metadata', got: 'array'"
        );
        assert_eq!(
            channel(json!({"name": "w", "is_disabled": null})),
            "Invalid request: Expected type: 'boolean' for field 'is_disabled', got: 'null'"
        );
    }
}
