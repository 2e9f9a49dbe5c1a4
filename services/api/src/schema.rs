//! Request bodies' JSON Schemas, written as JSON Schema, for the OpenAPI document.
//!
//! Bodies are read by hand ([`crate::body`]) so every error names its field, so no Rust type
//! describes them; their schemas are written here as the JSON Schema a client reads, rules
//! between fields included (`container_name` needs `worker_name`: an `anyOf`), which utoipa's
//! derive cannot say. [`from_json`] turns one into utoipa's model, and [`body_schema!`]
//! declares a named body a path can give as its `request_body`.
//!
//! The document and the parsers are checked against each other from outside: CI runs
//! schemathesis against `/openapi.json` (`tests/it/openapi.rs`), which sends bodies the schema
//! allows (each must be accepted) and bodies it forbids (each must be refused).

use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{
    AdditionalProperties, AllOfBuilder, AnyOfBuilder, Array, ArrayItems, Object, OneOfBuilder,
    Schema, SchemaType,
};

/// The pattern of a string that is not blank: it has a character that is neither white space
/// nor a control character (as [`crate::body::Body::required_string`] checks).
pub const NOT_BLANK: &str = "[^\\s\\x00-\\x1f\\x7f-\\x9f]";

/// The pattern of a worker or container name ([`vibehq_events::validate_name`]): 1-64
/// letters, digits, `_` or `-`, and not `_` alone (which stands for "no container").
pub const NAME: &str = "^(?!_$)[A-Za-z0-9_-]{1,64}$";

/// The pattern of an id ([`vibehq_events::validate_id`]): up to 128 characters, none of them
/// white space, a control character, `.`, `*` or `>` (an id is a subject token).
pub const ID: &str = "^[^\\s\\x00-\\x1f\\x7f-\\x9f.*>]{1,128}$";

/// A JSON Schema as utoipa's model. `anyOf`, `allOf` and `oneOf` may appear anywhere (alone on
/// their node, with an optional `description`), as may `properties`, `items` and
/// `additionalProperties` nested in them, and `$ref` (alone on its node).
///
/// # Panics
/// On a keyword utoipa's model cannot hold (the schemas are the program's own constants;
/// [`round_trips`] checks each in a test).
pub fn from_json(value: &Value) -> RefOr<Schema> {
    let Value::Object(node) = value else {
        panic!("a schema is a JSON object, not {value}");
    };
    if let Some(Value::String(reference)) = node.get("$ref") {
        return RefOr::Ref(utoipa::openapi::Ref::new(reference.clone()));
    }
    let description = node.get("description").and_then(Value::as_str);
    for (keyword, kind) in [("anyOf", 0), ("allOf", 1), ("oneOf", 2)] {
        let Some(Value::Array(items)) = node.get(keyword) else {
            continue;
        };
        let items = items.iter().map(from_json);
        return RefOr::T(match kind {
            0 => Schema::AnyOf(
                items
                    .fold(AnyOfBuilder::new(), |b, item| b.item(item))
                    .description(description)
                    .build(),
            ),
            1 => Schema::AllOf(
                items
                    .fold(AllOfBuilder::new(), |b, item| b.item(item))
                    .description(description)
                    .build(),
            ),
            _ => Schema::OneOf(
                items
                    .fold(OneOfBuilder::new(), |b, item| b.item(item))
                    .description(description)
                    .build(),
            ),
        });
    }
    let is_array = |t: &Value| t.as_str() == Some("array");
    let array_type = match node.get("type") {
        Some(Value::Array(types)) => types.iter().any(is_array),
        Some(t) => is_array(t),
        None => false,
    };
    if array_type {
        let mut array: Array = serde_json::from_value(with_items_placeholder(value))
            .unwrap_or_else(|e| panic!("an array schema: {e}: {value}"));
        let any = serde_json::json!({});
        array.items =
            ArrayItems::RefOrSchema(Box::new(from_json(node.get("items").unwrap_or(&any))));
        return RefOr::T(Schema::Array(array));
    }
    let mut plain = value.clone();
    let properties = plain
        .as_object_mut()
        .and_then(|node| node.remove("properties"));
    let additional = plain
        .as_object_mut()
        .and_then(|node| node.remove("additionalProperties"));
    let typeless = !node.contains_key("type");
    if let Some(node) = plain.as_object_mut() {
        node.entry("type").or_insert_with(|| "object".into());
    }
    let mut object: Object =
        serde_json::from_value(plain).unwrap_or_else(|e| panic!("an object schema: {e}: {value}"));
    if typeless && !node.contains_key("properties") && !node.contains_key("required") {
        object.schema_type = SchemaType::AnyValue;
    }
    if let Some(Value::Object(properties)) = properties {
        for (name, property) in properties {
            object.properties.insert(name, from_json(&property));
        }
    }
    object.additional_properties = match additional {
        None => None,
        Some(Value::Bool(allowed)) => Some(Box::new(AdditionalProperties::FreeForm(allowed))),
        Some(schema) => Some(Box::new(AdditionalProperties::RefOr(from_json(&schema)))),
    };
    RefOr::T(Schema::Object(object))
}

/// An array schema whose `items` serde can read (they are converted on their own).
fn with_items_placeholder(value: &Value) -> Value {
    let mut value = value.clone();
    if let Some(node) = value.as_object_mut() {
        node.insert("items".into(), serde_json::json!({"type": "string"}));
    }
    value
}

/// Whether `value` survives [`from_json`] unchanged: a keyword utoipa's model drops would be a
/// rule the document silently leaves out.
pub fn round_trips(value: &Value) -> Result<(), String> {
    let back = serde_json::to_value(from_json(value)).map_err(|e| e.to_string())?;
    if without_object_types(&back) == without_object_types(value) {
        Ok(())
    } else {
        Err(format!("written: {value}\nin the document: {back}"))
    }
}

/// `value` with every `"type": "object"` and `"items": {}` taken out: utoipa writes them
/// where a schema left them out, and they mean the same.
fn without_object_types(value: &Value) -> Value {
    match value {
        Value::Object(node) => Value::Object(
            node.iter()
                .filter(|(k, v)| !(k.as_str() == "type" && v.as_str() == Some("object")))
                .filter(|(k, v)| {
                    !(k.as_str() == "items" && v.as_object().is_some_and(|o| o.is_empty()))
                })
                .map(|(k, v)| (k.clone(), without_object_types(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_object_types).collect()),
        other => other.clone(),
    }
}

/// Declares request bodies by their JSON Schemas: each becomes a type a path's
/// `request_body(content = …)` and a document's `components(schemas(…))` can name.
///
/// ```ignore
/// vibehq_api::body_schema! {
///     /// A claim: who claims.
///     ClaimBody = {"type": "object", "required": ["worker_name"], ...}
/// }
/// ```
#[macro_export]
macro_rules! body_schema {
    ($($(#[$doc:meta])* $name:ident = $schema:tt)+) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;
        impl $name {
            /// The schema as written.
            pub fn json() -> ::serde_json::Value {
                ::serde_json::json!($schema)
            }
        }
        impl ::utoipa::PartialSchema for $name {
            fn schema() -> ::utoipa::openapi::RefOr<::utoipa::openapi::schema::Schema> {
                $crate::schema::from_json(&Self::json())
            }
        }
        impl ::utoipa::ToSchema for $name {
            fn name() -> ::std::borrow::Cow<'static, str> {
                ::std::borrow::Cow::Borrowed(stringify!($name))
            }
        }
    )+};
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn rules_between_fields_nested_objects_and_arrays_survive_into_the_document() {
        let schema = json!({
            "description": "a submission",
            "allOf": [
                {
                    "type": "object",
                    "required": ["task_type"],
                    "additionalProperties": false,
                    "properties": {
                        "task_type": {"type": "string", "minLength": 1, "maxLength": 128},
                        "worker_name": {"type": ["string", "null"], "pattern": "^[A-Za-z0-9_-]{1,64}$"},
                        "container_name": {"type": ["string", "null"]},
                        "priority": {"type": ["integer", "null"], "minimum": 0, "maximum": 9},
                        "depends_on": {"type": ["array", "null"], "maxItems": 3, "items": {"type": "string"}},
                        "rate": {"type": "object", "properties": {"max": {"type": "integer"}}}
                    }
                },
                {"anyOf": [
                    {"properties": {"container_name": {"type": "null"}}},
                    {"required": ["worker_name"], "properties": {"worker_name": {"type": "string"}}}
                ]}
            ]
        });
        round_trips(&schema).expect("nothing dropped");
    }

    #[test]
    fn a_keyword_the_model_cannot_hold_is_caught() {
        let schema =
            json!({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}});
        assert!(round_trips(&schema).is_err());
    }
}
