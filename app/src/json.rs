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
