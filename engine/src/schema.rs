//! JSON Schemas of orchestration inputs, derived from their Rust types (`schemars`), recorded in
//! the registry for tools: the dashboard's Start page offers an example generated from the
//! schema and checks an input against it before sending it.

use schemars::JsonSchema;

use crate::{Orchestration, Registry};

/// Records `O`'s input schema in `registry`.
pub fn describe<O: Orchestration>(registry: &mut Registry) -> &mut Registry
where
    O::Input: JsonSchema,
{
    let schema = schemars::schema_for!(O::Input);
    registry.describe_input::<O>(serde_json::Value::from(schema))
}

/// [`describe`], with `example` as the schema's first example (what the Start page offers) for
/// inputs whose type says little (a number, a list of names).
pub fn describe_with_example<O: Orchestration>(
    registry: &mut Registry,
    example: serde_json::Value,
) -> &mut Registry
where
    O::Input: JsonSchema,
{
    let mut schema = serde_json::Value::from(schemars::schema_for!(O::Input));
    if let Some(map) = schema.as_object_mut() {
        map.insert(
            "examples".to_owned(),
            serde_json::Value::Array(vec![example]),
        );
    }
    registry.describe_input::<O>(schema)
}
