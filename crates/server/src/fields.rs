//! Medusa's `fields` query parameter: which attributes of a record a read returns.
//!
//! A plain comma list replaces the defaults, `+f` adds, `-f` removes, `*relation` adds a relation
//! with all its fields and `relation.f` adds it with some. `id` is always returned. Unknown names
//! are ignored (Medusa answers `fields=bogus` with ids only). Secret values are not fields at
//! all: `salt` cannot be selected and a secret key's `token` is always `""`.

use serde_json::{Map, Value, json};

use keyward::{ApiKey, SalesChannel};

/// Key attributes in the order Medusa returns them.
pub const KEY_FIELDS: &[&str] = &[
    "id",
    "title",
    "token",
    "redacted",
    "type",
    "last_used_at",
    "updated_at",
    "created_at",
    "created_by",
    "revoked_at",
    "revoked_by",
    "expires_at",
    "metadata",
    "permissions",
    "allowed_ips",
    "deleted_at",
];
/// The defaults: every key attribute but `deleted_at` (the last).
const KEY_DEFAULTS: &[&str] = KEY_FIELDS.split_at(KEY_FIELDS.len() - 1).0;

/// Sales-channel attributes, in Medusa's order.
pub const CHANNEL_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "is_disabled",
    "metadata",
    "created_at",
    "updated_at",
    "deleted_at",
];

/// Sales-channel attributes in the order the sales-channel routes return them (`metadata` last,
/// unlike the `*sales_channels` expansion of a key).
const CHANNEL_ROUTE_FIELDS: &[&str] = &[
    "id",
    "name",
    "description",
    "is_disabled",
    "created_at",
    "updated_at",
    "deleted_at",
    "metadata",
];

/// A resolved selection: the record's own fields, and a relation's fields when selected.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub own: Vec<&'static str>,
    pub relation: Option<Vec<&'static str>>,
}

/// Resolves `fields` for a record with `all`/`defaults` own fields and one relation named
/// `relation` (selected by default with `relation_defaults`).
pub fn select(
    fields: Option<&str>,
    all: &'static [&'static str],
    defaults: &'static [&'static str],
    relation: &str,
    relation_all: &'static [&'static str],
    relation_defaults: Option<&'static [&'static str]>,
) -> Selection {
    let items: Vec<&str> = fields
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let replaces = items.iter().any(|i| !i.starts_with(['+', '-', '*']));
    let mut own: Vec<&'static str> = if replaces { Vec::new() } else { defaults.to_vec() };
    let mut rel: Option<Vec<&'static str>> = if replaces {
        None
    } else {
        relation_defaults.map(<[_]>::to_vec)
    };
    let find = |name: &str| all.iter().copied().find(|f| *f == name);
    for item in &items {
        if let Some(name) = item.strip_prefix('-') {
            own.retain(|f| *f != name);
            if name == relation {
                rel = None;
            }
        } else if let Some(name) = item.strip_prefix('*') {
            if name == relation {
                rel = Some(relation_all.to_vec());
            }
        } else {
            let name = item.strip_prefix('+').unwrap_or(item);
            if let Some((r, f)) = name.split_once('.') {
                if r == relation {
                    let fields = rel.get_or_insert_with(Vec::new);
                    if f == "*" {
                        *fields = relation_all.to_vec();
                    } else if let Some(f) = relation_all.iter().copied().find(|x| *x == f)
                        && !fields.contains(&f)
                    {
                        fields.push(f);
                    }
                }
            } else if name == relation {
                rel = Some(relation_defaults.unwrap_or(relation_all).to_vec());
            } else if let Some(f) = find(name)
                && !own.contains(&f)
            {
                own.push(f);
            }
        }
    }
    canonical(own, rel, all, relation_all)
}

/// The selection in canonical order, whatever order it was asked in, always with an id.
fn canonical(
    mut own: Vec<&'static str>,
    mut rel: Option<Vec<&'static str>>,
    all: &[&str],
    relation_all: &[&str],
) -> Selection {
    if !own.contains(&"id") {
        own.insert(0, "id");
    }
    own.sort_by_key(|f| all.iter().position(|x| x == f));
    if let Some(r) = rel.as_mut() {
        r.sort_by_key(|f| relation_all.iter().position(|x| x == f));
        if r.is_empty() {
            r.push("id");
        }
    }
    Selection { own, relation: rel }
}

/// The key selection for `fields`.
pub fn key_selection(fields: Option<&str>) -> Selection {
    select(
        fields,
        KEY_FIELDS,
        KEY_DEFAULTS,
        "sales_channels",
        CHANNEL_FIELDS,
        Some(&["id", "name"]),
    )
}

/// The sales-channel selection for `fields` (relation `publishable_api_keys`, off by default).
pub fn channel_selection(fields: Option<&str>) -> Selection {
    select(
        fields,
        CHANNEL_ROUTE_FIELDS,
        CHANNEL_ROUTE_FIELDS,
        "publishable_api_keys",
        KEY_FIELDS,
        None,
    )
}

/// The full JSON of a key (secret tokens are already `""` in an `ApiKey`).
pub fn key_json(k: &ApiKey) -> Map<String, Value> {
    match json!(k) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

pub fn channel_json(c: &SalesChannel) -> Map<String, Value> {
    match json!(c) {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Shapes records for a selection: their own selected fields, plus `relation` (the related
/// records grouped by owner, each shaped to the relation's fields) when it is selected.
pub fn shape<R, L, K: Ord>(
    records: &[R],
    sel: &Selection,
    json_of: impl Fn(&R) -> Map<String, Value>,
    id_of: impl Fn(&R) -> &K,
    relation: &str,
    related: Option<&std::collections::BTreeMap<K, Vec<L>>>,
    related_json_of: impl Fn(&L) -> Map<String, Value>,
) -> Vec<Value> {
    records
        .iter()
        .map(|r| {
            let mut out = project(&json_of(r), &sel.own);
            if let (Some(fields), Some(map)) = (&sel.relation, related) {
                let linked = map
                    .get(id_of(r))
                    .map(|ls| {
                        ls.iter()
                            .map(|l| Value::Object(project(&related_json_of(l), fields)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert(relation.to_owned(), Value::Array(linked));
            }
            Value::Object(out)
        })
        .collect()
}

/// Keeps `fields` of `full`, in their order.
pub fn project(full: &Map<String, Value>, fields: &[&str]) -> Map<String, Value> {
    fields
        .iter()
        .filter(|f| full.contains_key(**f) || !ONLY_WHEN_SET.contains(*f))
        .map(|f| ((*f).to_owned(), full.get(*f).cloned().unwrap_or(Value::Null)))
        .collect()
}

/// Attributes Medusa's records do not have: a record shows them only when they are set, so a
/// key without them is answered exactly as Medusa answers it.
const ONLY_WHEN_SET: &[&str] = &["expires_at", "metadata", "permissions", "allowed_ips"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_plus_minus_and_relations() {
        let s = key_selection(None);
        assert_eq!(s.own, KEY_DEFAULTS);
        assert_eq!(s.relation.as_deref(), Some(&["id", "name"][..]));
        let s = key_selection(Some("id,title"));
        assert_eq!((s.own, s.relation), (vec!["id", "title"], None));
        assert_eq!(key_selection(Some("bogus")).own, vec!["id"]);
        assert_eq!(key_selection(Some("+salt")).own, KEY_DEFAULTS, "salt is not a field");
        assert!(!key_selection(Some("-title")).own.contains(&"title"));
        assert_eq!(key_selection(Some("*sales_channels")).relation.unwrap(), CHANNEL_FIELDS);
        let s = key_selection(Some("sales_channels.id"));
        assert_eq!(
            (s.own, s.relation.unwrap()),
            (vec!["id"], vec!["id"]),
            "an explicit select replaces the defaults"
        );
        let s = key_selection(Some("+sales_channels.id"));
        assert_eq!(
            (s.own, s.relation.unwrap()),
            (KEY_DEFAULTS.to_vec(), vec!["id", "name"])
        );
        assert_eq!(key_selection(Some("title,id")).own, vec!["id", "title"]);
    }
}
