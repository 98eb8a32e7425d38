//! The proto3 JSON mapping of `jembatan.v1` messages, read from their
//! descriptors (prost-reflect): lowerCamelCase field names (the proto
//! names are accepted too), enums by name, 64-bit integers as strings,
//! timestamps as RFC 3339. The broker's HTTP/JSON door and its OpenAPI
//! document use it, and so can any Rust client.

use std::fmt;
use std::sync::OnceLock;

use prost::{Message, Name};
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::Value;

/// A message that does not convert to or from JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError(String);

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JsonError {}

/// Every descriptor of [`FILE_DESCRIPTOR_SET`](crate::FILE_DESCRIPTOR_SET),
/// with the `google.protobuf` files it imports.
pub fn descriptor_pool() -> Result<&'static DescriptorPool, JsonError> {
    static POOL: OnceLock<Result<DescriptorPool, JsonError>> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET)
            .map_err(|e| JsonError(format!("descriptor set: {e}")))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The descriptor of message `M`.
pub fn descriptor<M: Name>() -> Result<MessageDescriptor, JsonError> {
    message_descriptor(&M::full_name())
}

/// The descriptor of the message with full name `name`
/// (`jembatan.v1.Receipt`).
pub fn message_descriptor(name: &str) -> Result<MessageDescriptor, JsonError> {
    descriptor_pool()?
        .get_message_by_name(name)
        .ok_or_else(|| JsonError(format!("no descriptor for {name}")))
}

/// `message` in the proto3 JSON mapping, every field present (unset
/// fields with their default value, so a client need not know them).
pub fn to_json<M: Message + Name>(message: &M) -> Result<Value, JsonError> {
    let mut dynamic = DynamicMessage::new(descriptor::<M>()?);
    dynamic
        .transcode_from(message)
        .map_err(|e| JsonError(format!("{}: {e}", M::full_name())))?;
    let options = SerializeOptions::new().skip_default_fields(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| JsonError(format!("{}: {e}", M::full_name())))
}

/// A message `M` from its proto3 JSON form; an unknown field, a value of
/// the wrong type or an unknown enum name is an error naming it.
pub fn from_json<M: Message + Name + Default>(value: Value) -> Result<M, JsonError> {
    let dynamic = DynamicMessage::deserialize(descriptor::<M>()?, value)
        .map_err(|e| JsonError(format!("{}: {e}", M::full_name())))?;
    dynamic
        .transcode_to::<M>()
        .map_err(|e| JsonError(format!("{}: {e}", M::full_name())))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::v1;

    #[test]
    fn messages_read_back_as_written_in_camel_case() {
        let receipt = v1::Receipt {
            exchange_id: "e-1".into(),
            entry_seq: 9,
            completed_at: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let value = to_json(&receipt).unwrap();
        assert_eq!(value["exchangeId"], "e-1");
        assert_eq!(value["entrySeq"], "9", "64-bit integers as strings");
        assert_eq!(value["completedAt"], "2023-11-14T22:13:20Z");
        assert_eq!(value["rows"], "0", "defaults are written");
        assert_eq!(from_json::<v1::Receipt>(value).unwrap(), receipt);
    }

    #[test]
    fn proto_names_enums_and_numbers_are_read() {
        let request: v1::QueryRequest = from_json(json!({
            "dataset": "a.b",
            "target_schema": "c.d@1",
            "limit": 5,
            "filter": {"predicate": {"field": "x", "op": "OPERATOR_EQ",
                                     "value": {"intValue": "3"}}},
        }))
        .unwrap();
        assert_eq!(request.target_schema, "c.d@1");
        assert_eq!(request.limit, 5);
        let Some(v1::filter::Kind::Predicate(p)) = request.filter.unwrap().kind else {
            panic!("a predicate")
        };
        assert_eq!(p.op, v1::Operator::Eq as i32);
    }

    #[test]
    fn bad_json_is_refused_naming_the_fault() {
        let unknown = from_json::<v1::QueryRequest>(json!({"consumer": "x"})).unwrap_err();
        assert!(unknown.to_string().contains("consumer"), "{unknown}");
        let wrong = from_json::<v1::QueryRequest>(json!({"limit": "many"})).unwrap_err();
        assert!(wrong.to_string().contains("QueryRequest"), "{wrong}");
        let op = json!({"predicate": {"field": "x", "op": "OPERATOR_LIKE"}});
        assert!(from_json::<v1::Filter>(op).is_err());
    }
}
