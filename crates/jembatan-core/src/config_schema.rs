//! JSON Schema forms of config values whose Rust type serializes
//! differently from how config files write them.

use std::borrow::Cow;

/// A duration as config files write it (humantime): `"30s"`, `"10m"`,
/// `"1h 30m"`. Used as `#[schemars(with = "HumanDuration")]` on
/// `Duration` fields read with `humantime_serde`.
pub struct HumanDuration;

impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> Cow<'static, str> {
        "HumanDuration".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^\\s*[0-9]+\\s*[a-zA-Z]+(\\s*[0-9]+\\s*[a-zA-Z]+)*\\s*$",
        })
    }
}
