//! Payloads (inputs, outputs, custom statuses, entity states, history details) travel as JSON
//! values, not as JSON text inside JSON.
//!
//! The engine keeps a payload as JSON text. The shapes the dashboard and the JSON API return hold
//! that text in a `String` field marked `#[serde(with = "crate::json::text")]` (or
//! `crate::json::text_opt`): serialising it writes the document itself (`"input": ["a","b"]`, not
//! `"input": "[\"a\",\"b\"]"`), and deserialising takes any JSON value back to its compact text.
//! Text that is not JSON (it should not happen) is written as a JSON string rather than lost.
//! [`pretty`] indents a payload once, for display.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The value `text` holds, or `text` itself as a string when it is not JSON.
fn value_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// `String` fields holding JSON text.
pub mod text {
    use super::*;

    /// Writes the document `text` holds.
    pub fn serialize<S: Serializer>(text: &str, serializer: S) -> Result<S::Ok, S::Error> {
        value_of(text).serialize(serializer)
    }

    /// Reads any JSON value as its compact text.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
        Value::deserialize(deserializer).map(|v| v.to_string())
    }
}

/// `Option<String>` fields holding JSON text; `None` is written as `null` and `null` reads as
/// `None` (a payload that is JSON `null` is `Some("null")` on the server and comes back `None`).
pub mod text_opt {
    use super::*;

    /// Writes the document, or `null`.
    pub fn serialize<S: Serializer>(
        text: &Option<String>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        text.as_deref().map(value_of).serialize(serializer)
    }

    /// Reads any JSON value as its compact text; `null` as `None`.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<String>, D::Error> {
        Option::<Value>::deserialize(deserializer).map(|v| v.map(|v| v.to_string()))
    }
}

/// `text` indented for reading; text that is not JSON is returned as it is.
pub fn pretty(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| text.to_owned())
}

/// At most `chars` characters of `text`, marked with `…` when cut.
pub fn preview(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

/// Replaces each of `fields` of the object `value` that holds JSON text by the document itself,
/// so a history event's payloads are one JSON document with the event, not text inside it.
pub fn embed_payloads(value: &mut Value, fields: &[&str]) {
    let Some(map) = value.as_object_mut() else {
        return;
    };
    for field in fields {
        if let Some(slot) = map.get_mut(*field)
            && let Some(text) = slot.as_str()
            && let Ok(inner) = serde_json::from_str::<Value>(text)
        {
            *slot = inner;
        }
    }
}

/// A JSON Schema's node, with `$ref`s into the root's `$defs` (or `definitions`) followed.
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    let mut node = node;
    for _ in 0..32 {
        let Some(target) = node.get("$ref").and_then(Value::as_str) else {
            return node;
        };
        let pointer = target.strip_prefix('#').unwrap_or(target);
        match root.pointer(pointer) {
            Some(next) => node = next,
            None => return node,
        }
    }
    node
}

/// The names an object schema requires.
fn required(node: &Value) -> impl Iterator<Item = &str> {
    node.get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

/// The schema's first non-null type (`"type": ["integer", "null"]` is an integer).
fn first_type(node: &Value) -> Option<&str> {
    match node.get("type")? {
        Value::String(t) => Some(t.as_str()).filter(|t| *t != "null"),
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null"),
        _ => None,
    }
}

/// An input that satisfies `schema` (a JSON Schema as `schemars` writes them): its own
/// `examples`, `default`, `const` or first `enum` value where it has one; else the required
/// properties of an object, one item of an array (or `minItems`), `"text"`, and the smallest
/// number at least 1 that its bounds allow.
pub fn example(schema: &Value) -> Value {
    example_at(schema, schema, 0)
}

fn example_at(root: &Value, node: &Value, depth: u32) -> Value {
    let node = resolve(root, node);
    if depth > 16 {
        return Value::Null;
    }
    let first_of = |key: &str| node.get(key).and_then(Value::as_array)?.first();
    let given = first_of("examples")
        .or_else(|| node.get("default"))
        .or_else(|| node.get("const"))
        .or_else(|| first_of("enum"));
    if let Some(value) = given {
        return value.clone();
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = node.get(key).and_then(Value::as_array) {
            let option = options
                .iter()
                .find(|o| first_type(resolve(root, o)).is_some())
                .or(options.first());
            return option.map_or(Value::Null, |o| example_at(root, o, depth + 1));
        }
    }
    let bound = |key: &str| node.get(key).and_then(Value::as_f64);
    match first_type(node) {
        Some("object") => {
            let mut map = serde_json::Map::new();
            let properties = node.get("properties").and_then(Value::as_object);
            for name in required(node) {
                let property = properties.and_then(|p| p.get(name)).unwrap_or(&Value::Null);
                map.insert(name.to_owned(), example_at(root, property, depth + 1));
            }
            Value::Object(map)
        }
        Some("array") => {
            let n = node
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .max(1);
            let item = node
                .get("items")
                .map_or(Value::Null, |i| example_at(root, i, depth + 1));
            Value::Array((0..n.min(16)).map(|_| item.clone()).collect())
        }
        Some("string") => Value::from("text"),
        Some(kind @ ("integer" | "number")) => {
            let mut n = bound("minimum").map_or(1.0, |m| m.max(1.0));
            if let Some(max) = bound("maximum") {
                n = n.min(max);
            }
            if kind == "integer" {
                Value::from(n as i64)
            } else {
                Value::from(n)
            }
        }
        Some("boolean") => Value::Bool(true),
        _ => Value::Null,
    }
}

/// Whether `value` satisfies `schema`, for the parts of JSON Schema `schemars` writes (types,
/// required and unknown properties, items and their counts, numeric bounds, enums, `$ref`,
/// `anyOf`/`oneOf`); the first problem, with where it is (`/names/0`), when not.
pub fn check(schema: &Value, value: &Value) -> Result<(), String> {
    check_at(schema, schema, value, "")
}

fn check_at(root: &Value, node: &Value, value: &Value, at: &str) -> Result<(), String> {
    let node = resolve(root, node);
    let place = if at.is_empty() {
        "the input".to_owned()
    } else {
        at.to_owned()
    };
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = node.get(key).and_then(Value::as_array) {
            let mut first_problem = None;
            for option in options {
                match check_at(root, option, value, at) {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        first_problem.get_or_insert(e);
                    }
                }
            }
            return Err(first_problem.unwrap_or_else(|| format!("{place} matches no option")));
        }
    }
    if let Some(options) = node.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        return Err(format!(
            "{place} must be one of {}",
            Value::Array(options.clone())
        ));
    }
    if let Some(expected) = node.get("const")
        && expected != value
    {
        return Err(format!("{place} must be {expected}"));
    }
    let types: Vec<&str> = match node.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let is = |t: &str| match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => true,
    };
    if !types.is_empty() && !types.iter().any(|t| is(t)) {
        let article = |t: &str| {
            if t.starts_with(['a', 'i', 'o']) {
                "an"
            } else {
                "a"
            }
        };
        let wanted: Vec<String> = types
            .iter()
            .map(|t| format!("{} {t}", article(t)))
            .collect();
        return Err(format!("{place} must be {}", wanted.join(" or ")));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = node.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            return Err(format!("{place} must be at least {min}"));
        }
        if let Some(max) = node.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            return Err(format!("{place} must be at most {max}"));
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(min) = node.get("minItems").and_then(Value::as_u64)
            && (items.len() as u64) < min
        {
            return Err(format!("{place} needs at least {min} items"));
        }
        if let Some(max) = node.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            return Err(format!("{place} takes at most {max} items"));
        }
        if let Some(item) = node.get("items") {
            for (i, v) in items.iter().enumerate() {
                check_at(root, item, v, &format!("{at}/{i}"))?;
            }
        }
    }
    if let Some(map) = value.as_object() {
        let properties = node.get("properties").and_then(Value::as_object);
        for name in required(node) {
            if !map.contains_key(name) {
                return Err(format!("{place} needs the field \"{name}\""));
            }
        }
        for (key, v) in map {
            match properties.and_then(|p| p.get(key)) {
                Some(property) => check_at(root, property, v, &format!("{at}/{key}"))?,
                None if node.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{place} has an unknown field \"{key}\""));
                }
                None => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Shape {
        #[serde(with = "text")]
        details: String,
        #[serde(with = "text_opt", default)]
        input: Option<String>,
    }

    #[test]
    fn payloads_are_written_as_values_and_read_back_as_their_text() {
        let shape = Shape {
            details: r#"{"input":["a","b"]}"#.into(),
            input: Some(r#"["a","b"]"#.into()),
        };
        let written = serde_json::to_string(&shape).unwrap();
        assert_eq!(
            written,
            r#"{"details":{"input":["a","b"]},"input":["a","b"]}"#
        );
        assert_eq!(serde_json::from_str::<Shape>(&written).unwrap(), shape);
    }

    #[test]
    fn absent_and_non_json_payloads_survive() {
        let shape = Shape {
            details: "not json".into(),
            input: None,
        };
        let written = serde_json::to_string(&shape).unwrap();
        assert_eq!(written, r#"{"details":"not json","input":null}"#);
        let back: Shape = serde_json::from_str(&written).unwrap();
        assert_eq!(back.input, None);
        assert_eq!(back.details, r#""not json""#);
    }

    #[test]
    fn history_payloads_are_embedded_once() {
        let mut event =
            serde_json::json!({"name": "Hello", "input": "{\"request\":1}", "reason": "x"});
        embed_payloads(&mut event, &["input", "reason"]);
        assert_eq!(
            event,
            serde_json::json!({"name": "Hello", "input": {"request": 1}, "reason": "x"})
        );
        assert_eq!(pretty(r#"{"a":1}"#), "{\n  \"a\": 1\n}");
    }
}

#[cfg(test)]
mod schema_tests {
    use serde_json::json;

    use super::{check, example};

    fn monitor_like() -> serde_json::Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "job_id": {"type": "string", "examples": ["nightly-export"]},
                "checks": {"type": "integer", "format": "uint32", "minimum": 0, "default": 0},
                "ready_after": {"type": ["integer", "null"], "minimum": 0},
                "interval_ms": {"type": "integer", "minimum": 0},
                "parts": {"type": "array", "items": {"$ref": "#/$defs/Part"}}
            },
            "required": ["job_id", "interval_ms", "parts"],
            "$defs": {"Part": {"type": "object", "properties": {"n": {"type": "integer", "maximum": 9}}, "required": ["n"], "additionalProperties": false}}
        })
    }

    #[test]
    fn examples_fill_what_is_required_and_pass_their_own_check() {
        let schema = monitor_like();
        let made = example(&schema);
        assert_eq!(
            made,
            json!({"job_id": "nightly-export", "interval_ms": 1, "parts": [{"n": 1}]})
        );
        assert_eq!(check(&schema, &made), Ok(()));
        for (schema, expected) in [
            (
                json!({"type": "array", "items": {"type": "string"}}),
                json!(["text"]),
            ),
            (
                json!({"type": "integer", "format": "uint32", "minimum": 0}),
                json!(1),
            ),
            (
                json!({"type": "integer", "minimum": 5, "maximum": 7}),
                json!(5),
            ),
            (json!({"enum": ["b", "a"]}), json!("b")),
            (
                json!({"anyOf": [{"type": "null"}, {"type": "boolean"}]}),
                json!(true),
            ),
        ] {
            assert_eq!(example(&schema), expected, "{schema}");
            assert_eq!(check(&schema, &expected), Ok(()));
        }
    }

    #[test]
    fn a_wrong_input_is_named_where_it_is_wrong() {
        let schema = monitor_like();
        for (value, says) in [
            (json!(null), "the input must be an object"),
            (
                json!({"interval_ms": 1, "parts": []}),
                "needs the field \"job_id\"",
            ),
            (
                json!({"job_id": 3, "interval_ms": 1, "parts": []}),
                "/job_id must be a string",
            ),
            (
                json!({"job_id": "j", "interval_ms": -1, "parts": []}),
                "/interval_ms must be at least 0",
            ),
            (
                json!({"job_id": "j", "interval_ms": 1.5, "parts": []}),
                "/interval_ms must be an integer",
            ),
            (
                json!({"job_id": "j", "interval_ms": 1, "parts": [{"n": 10}]}),
                "/parts/0/n must be at most 9",
            ),
            (
                json!({"job_id": "j", "interval_ms": 1, "parts": [{"n": 1, "m": 2}]}),
                "/parts/0 has an unknown field \"m\"",
            ),
        ] {
            let problem = check(&schema, &value).unwrap_err();
            assert!(problem.contains(says), "{value}: {problem}");
        }
    }
}
