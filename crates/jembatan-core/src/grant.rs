//! What an agreement grants on each field, and how much it allows.
//!
//! A field is granted in one of three access modes:
//! - `read`: the value is returned;
//! - `verify`: the consumer sends a value and learns only whether it
//!   matches; the stored value never leaves the broker;
//! - `masked`: a partial value is returned, per a [`MaskRule`].
//!
//! In agreement documents a read grant is written as the bare field name
//! (`"nik"`), the others as objects (`{"field": "nik", "mode": "masked",
//! "mask": "keep_last:4"}`), so agreements written before access modes
//! existed keep their meaning and their terms hash.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::InvalidArgument;
use crate::ids::FieldName;

/// How a granted field may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccessMode {
    /// The value is returned as stored.
    Read,
    /// The consumer sends a value and learns only whether it matches.
    Verify,
    /// A partial value is returned, per the grant's `mask` rule.
    Masked,
}

impl AccessMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::Read => "read",
            AccessMode::Verify => "verify",
            AccessMode::Masked => "masked",
        }
    }
}

impl fmt::Display for AccessMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AccessMode {
    type Err = InvalidArgument;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(AccessMode::Read),
            "verify" => Ok(AccessMode::Verify),
            "masked" => Ok(AccessMode::Masked),
            _ => Err(InvalidArgument::new(
                "mode",
                format!("unknown access mode {s:?} (read, verify, masked)"),
            )),
        }
    }
}

/// Most characters a mask rule may keep.
const MAX_KEEP: usize = 64;

/// How a `masked` field's value is shortened before it leaves the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MaskRule {
    /// Keep the first N characters, replace the rest with `*`.
    KeepFirst(usize),
    /// Keep the last N characters, replace the rest with `*`.
    KeepLast(usize),
    /// Keep only the year of a date or date-time: `1990-05-17`,
    /// `1990-05-17T08:00:00Z` and `17-05-1990` (or with `/` or `.`) all
    /// become `1990`.
    Year,
}

impl MaskRule {
    /// The masked value. Strings and numbers are masked as text; `null`
    /// stays `null`; anything else (objects, arrays, booleans) cannot be
    /// masked partially and becomes `null`.
    pub fn apply(self, value: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        let text = match value {
            Value::Null => return Value::Null,
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Value::Null,
        };
        let chars: Vec<char> = text.chars().collect();
        let masked: String = match self {
            MaskRule::KeepFirst(n) => chars
                .iter()
                .enumerate()
                .map(|(i, c)| if i < n { *c } else { '*' })
                .collect(),
            MaskRule::KeepLast(n) => {
                let hidden = chars.len().saturating_sub(n);
                chars
                    .iter()
                    .enumerate()
                    .map(|(i, c)| if i >= hidden { *c } else { '*' })
                    .collect()
            }
            MaskRule::Year => {
                let digits = |s: &[char]| s.iter().all(char::is_ascii_digit);
                let sep = |c: char| matches!(c, '-' | '/' | '.');
                if chars.len() >= 4 && digits(&chars[..4]) && chars.get(4).is_none_or(|c| sep(*c)) {
                    // ISO: YYYY-MM-DD...
                    chars[..4].iter().collect()
                } else if chars.len() == 10
                    && digits(&chars[..2])
                    && sep(chars[2])
                    && digits(&chars[3..5])
                    && sep(chars[5])
                    && digits(&chars[6..])
                {
                    // DD-MM-YYYY
                    chars[6..].iter().collect()
                } else {
                    // not a date: nothing of it is revealed
                    "*".repeat(chars.len())
                }
            }
        };
        Value::String(masked)
    }
}

impl fmt::Display for MaskRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaskRule::KeepFirst(n) => write!(f, "keep_first:{n}"),
            MaskRule::KeepLast(n) => write!(f, "keep_last:{n}"),
            MaskRule::Year => f.write_str("year"),
        }
    }
}

impl FromStr for MaskRule {
    type Err = InvalidArgument;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            InvalidArgument::new(
                "mask",
                format!(
                    "unknown mask rule {:?} (keep_first:N, keep_last:N with N from 1 to {MAX_KEEP}, or year)",
                    crate::ids::truncate(s, 64)
                ),
            )
        };
        if s == "year" {
            return Ok(MaskRule::Year);
        }
        let (rule, n) = s.split_once(':').ok_or_else(bad)?;
        let n: usize = n.parse().map_err(|_| bad())?;
        if n == 0 || n > MAX_KEEP {
            return Err(bad());
        }
        match rule {
            "keep_first" => Ok(MaskRule::KeepFirst(n)),
            "keep_last" => Ok(MaskRule::KeepLast(n)),
            _ => Err(bad()),
        }
    }
}

/// One granted field and its access mode.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldGrant {
    pub field: FieldName,
    pub mode: AccessMode,
    /// The mask rule; set exactly when the mode is `masked`.
    pub mask: Option<MaskRule>,
}

impl FieldGrant {
    pub fn read(field: FieldName) -> Self {
        Self {
            field,
            mode: AccessMode::Read,
            mask: None,
        }
    }

    /// Builds a grant, checking that a mask rule comes with `masked` and
    /// only with it.
    pub fn new(
        field: FieldName,
        mode: AccessMode,
        mask: Option<MaskRule>,
    ) -> Result<Self, InvalidArgument> {
        match (mode, mask) {
            (AccessMode::Masked, None) => Err(InvalidArgument::new(
                "mask",
                format!("field {field} is granted masked but names no mask rule"),
            )),
            (AccessMode::Read | AccessMode::Verify, Some(_)) => Err(InvalidArgument::new(
                "mask",
                format!("field {field} has a mask rule but is granted {mode}, not masked"),
            )),
            _ => Ok(Self { field, mode, mask }),
        }
    }

    /// Whether the field's value (whole or masked) reaches the consumer.
    pub fn returns_value(&self) -> bool {
        self.mode != AccessMode::Verify
    }
}

/// A granted field: its name alone (read access), or a table naming its
/// access mode.
#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum GrantForm {
    /// A field granted for `read`.
    Read(FieldName),
    /// A field with its access mode.
    Full {
        /// The field granted.
        field: FieldName,
        /// How it may be used.
        mode: AccessMode,
        /// The mask rule, set exactly when `mode` is `masked`:
        /// `keep_first:N` or `keep_last:N` (N from 1 to 64; the rest
        /// becomes `*`), or `year` (a date keeps its year only).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mask: Option<String>,
    },
}

impl Serialize for FieldGrant {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.mode {
            AccessMode::Read => GrantForm::Read(self.field.clone()),
            mode => GrantForm::Full {
                field: self.field.clone(),
                mode,
                mask: self.mask.map(|m| m.to_string()),
            },
        }
        .serialize(s)
    }
}

impl schemars::JsonSchema for FieldGrant {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FieldGrant".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        GrantForm::json_schema(generator)
    }
}

impl<'de> Deserialize<'de> for FieldGrant {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match GrantForm::deserialize(d)? {
            GrantForm::Read(field) => Ok(FieldGrant::read(field)),
            GrantForm::Full { field, mode, mask } => {
                let mask = mask
                    .map(|m| m.parse::<MaskRule>())
                    .transpose()
                    .map_err(serde::de::Error::custom)?;
                FieldGrant::new(field, mode, mask).map_err(serde::de::Error::custom)
            }
        }
    }
}

/// How much an agreement allows; 0 means no limit. Counted per agreement
/// across every broker replica sharing the store.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Records delivered per UTC day.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(extend("default" = 0))]
    pub rows_per_day: u64,
    /// Allowed requests per minute.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(extend("default" = 0))]
    pub requests_per_minute: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Quota {
    pub fn is_unlimited(&self) -> bool {
        self.rows_per_day == 0 && self.requests_per_minute == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn masks() {
        let cases = [
            (
                "keep_last:4",
                json!("3201010101900001"),
                json!("************0001"),
            ),
            (
                "keep_first:6",
                json!("3201010101900001"),
                json!("320101**********"),
            ),
            ("keep_last:4", json!("abc"), json!("abc")),
            ("keep_first:1", json!("Siti Aminah"), json!("S**********")),
            ("keep_last:2", json!("Ñandú"), json!("***dú")),
            ("keep_last:2", json!(12345), json!("***45")),
            ("year", json!("1990-05-17"), json!("1990")),
            ("year", json!("1990-05-17T08:00:00Z"), json!("1990")),
            ("year", json!("17/05/1990"), json!("1990")),
            ("year", json!("17-05-1990"), json!("1990")),
            ("year", json!("1990"), json!("1990")),
            ("year", json!("19900517"), json!("********")),
            ("year", json!("17 Mei 1990"), json!("***********")),
            ("year", json!(null), json!(null)),
            ("keep_last:4", json!({"a": 1}), json!(null)),
            ("keep_last:4", json!(true), json!(null)),
        ];
        for (rule, input, want) in cases {
            let rule: MaskRule = rule.parse().unwrap();
            assert_eq!(rule.apply(&input), want, "{rule} on {input}");
            assert_eq!(rule.to_string().parse::<MaskRule>().unwrap(), rule);
        }
        for bad in [
            "keep_last:0",
            "keep_last:65",
            "keep_last",
            "keep:4",
            "",
            "YEAR",
        ] {
            let err = bad.parse::<MaskRule>().unwrap_err().to_string();
            assert!(err.contains("mask rule"), "{bad}: {err}");
        }
    }

    #[test]
    fn grant_forms() {
        let read: FieldGrant = serde_json::from_value(json!("nik")).unwrap();
        assert_eq!(read.mode, AccessMode::Read);
        assert_eq!(serde_json::to_value(&read).unwrap(), json!("nik"));

        let masked: FieldGrant = serde_json::from_value(
            json!({"field": "nik", "mode": "masked", "mask": "keep_last:4"}),
        )
        .unwrap();
        assert_eq!(masked.mask, Some(MaskRule::KeepLast(4)));
        assert_eq!(
            serde_json::to_value(&masked).unwrap(),
            json!({"field": "nik", "mode": "masked", "mask": "keep_last:4"})
        );
        let verify: FieldGrant =
            serde_json::from_value(json!({"field": "nama_lengkap", "mode": "verify"})).unwrap();
        assert!(!verify.returns_value());

        for (bad, want) in [
            (
                json!({"field": "nik", "mode": "masked"}),
                "names no mask rule",
            ),
            (
                json!({"field": "nik", "mode": "read", "mask": "year"}),
                "not masked",
            ),
            (
                json!({"field": "nik", "mode": "masked", "mask": "everything"}),
                "unknown mask rule",
            ),
            (json!({"field": "nik", "mode": "peek"}), "did not match"),
            (json!("nik; DROP TABLE x"), "did not match"),
        ] {
            let err = serde_json::from_value::<FieldGrant>(bad.clone())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}
