//! Agency ids, dataset ids (`<agency>.<dataset>`) and field names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::InvalidArgument;
use crate::limits::{MAX_IDENT_BYTES, MAX_PURPOSE_BYTES};

/// Checks an identifier; a failure names `field`, and `kind` in words.
fn check_ident(field: &str, kind: &str, s: &str) -> Result<(), InvalidArgument> {
    let err = |message: String| Err(InvalidArgument::new(field, message));
    if s.is_empty() {
        return err(format!("{kind} is empty"));
    }
    if s.len() > MAX_IDENT_BYTES {
        return err(format!(
            "{kind} is longer than {MAX_IDENT_BYTES} bytes (limit max_ident_bytes)"
        ));
    }
    let mut chars = s.chars();
    let first = chars.next().unwrap_or('_');
    if !first.is_ascii_lowercase() {
        return err(format!(
            "{kind} {s:?} must start with a lowercase ASCII letter"
        ));
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return err(format!(
            "{kind} {s:?} contains {bad:?}; only a-z, 0-9, '_' and '-' are allowed"
        ));
    }
    Ok(())
}

/// An agency's id, e.g. `disdukcapil`: lowercase ASCII letters, digits,
/// `_` and `-`, starting with a letter. It is carried in the agency's
/// certificate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgencyId(String);

impl AgencyId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AgencyId {
    type Err = InvalidArgument;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        check_ident("agency", "agency id", s)?;
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for AgencyId {
    type Error = InvalidArgument;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<AgencyId> for String {
    fn from(id: AgencyId) -> String {
        id.0
    }
}

impl fmt::Display for AgencyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A dataset id, `<agency>.<dataset>`, e.g. `disdukcapil.penduduk`. The
/// agency part names the provider.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DatasetId {
    full: String,
    dot: usize,
}

impl DatasetId {
    pub fn new(agency: &AgencyId, name: &str) -> Result<Self, InvalidArgument> {
        format!("{agency}.{name}").parse()
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The providing agency.
    pub fn agency(&self) -> AgencyId {
        AgencyId(self.full[..self.dot].to_owned())
    }

    /// The dataset's name within its agency.
    pub fn name(&self) -> &str {
        &self.full[self.dot + 1..]
    }
}

impl FromStr for DatasetId {
    type Err = InvalidArgument;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |m: String| InvalidArgument::new("dataset", m);
        let Some(dot) = s.find('.') else {
            return Err(err(format!(
                "dataset id {s:?} must have the form <agency>.<dataset>"
            )));
        };
        check_ident("dataset", "agency part of the dataset id", &s[..dot])?;
        check_ident("dataset", "dataset name", &s[dot + 1..])?;
        Ok(Self {
            full: s.to_owned(),
            dot,
        })
    }
}

impl TryFrom<String> for DatasetId {
    type Error = InvalidArgument;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<DatasetId> for String {
    fn from(id: DatasetId) -> String {
        id.full
    }
}

impl fmt::Display for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// A field (column) name as named in a request: 1 to 128 bytes of ASCII
/// letters, digits and `_`, starting with a letter or `_`. Field names
/// never reach SQL unless they also match the adapter's whitelist.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FieldName(String);

impl FieldName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for FieldName {
    type Err = InvalidArgument;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |m: String| InvalidArgument::new("field", m);
        if s.is_empty() {
            return Err(err("field name is empty".into()));
        }
        if s.len() > MAX_IDENT_BYTES {
            return Err(err(format!(
                "field name is longer than {MAX_IDENT_BYTES} bytes (limit max_ident_bytes)"
            )));
        }
        let first = s.as_bytes()[0];
        let valid_first = first.is_ascii_alphabetic() || first == b'_';
        if !valid_first || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(err(format!(
                "field name {:?} may hold only ASCII letters, digits and '_', not starting with a digit",
                truncate(s, 64)
            )));
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for FieldName {
    type Error = InvalidArgument;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<FieldName> for String {
    fn from(f: FieldName) -> String {
        f.0
    }
}

impl fmt::Display for FieldName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a purpose as a request names it, like every other string a
/// request carries: not blank, at most `MAX_PURPOSE_BYTES`, and free of
/// NUL and other control characters. Whether it is a registered purpose
/// is the broker's question, asked after this one.
pub fn check_purpose(s: &str) -> Result<(), InvalidArgument> {
    let err = |m: String| Err(InvalidArgument::new("purpose", m));
    if s.trim().is_empty() {
        return err("purpose is required".into());
    }
    if s.len() > MAX_PURPOSE_BYTES {
        return err(format!(
            "purpose is longer than {MAX_PURPOSE_BYTES} bytes (limit max_purpose_bytes)"
        ));
    }
    if s.contains('\0') {
        return err("purpose contains a NUL byte".into());
    }
    if s.chars().any(char::is_control) {
        return err("purpose contains a control character".into());
    }
    Ok(())
}

/// Cuts `s` to at most `max` bytes on a character boundary, for messages
/// that quote untrusted input.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_are_checked_like_every_other_string() {
        let long = "p".repeat(MAX_PURPOSE_BYTES + 1);
        let cases: [(&str, &str, Option<&str>); 6] = [
            ("registered-looking", "bansos", None),
            ("blank", "  ", Some("required")),
            ("nul", "bansos\0", Some("NUL")),
            ("control", "bansos\n", Some("control")),
            ("too long", &long, Some("longer")),
            ("spaces and words", "verifikasi penerima", None),
        ];
        for (name, purpose, refused) in cases {
            match (check_purpose(purpose), refused) {
                (Ok(()), None) => {}
                (Err(e), Some(words)) => {
                    assert_eq!(e.field, "purpose", "{name}");
                    assert!(e.message.contains(words), "{name}: {e}");
                }
                (got, want) => panic!("{name}: got {got:?}, want refusal {want:?}"),
            }
        }
    }

    #[test]
    fn dataset_ids() {
        let cases: &[(&str, bool)] = &[
            ("disdukcapil.penduduk", true),
            ("dinsos.penerima_bansos", true),
            ("disdukcapil", false),
            (".penduduk", false),
            ("disdukcapil.", false),
            ("Disdukcapil.penduduk", false),
            ("a.b;drop table x", false),
            ("a.b.c", false),
        ];
        for (s, ok) in cases {
            assert_eq!(s.parse::<DatasetId>().is_ok(), *ok, "{s}");
        }
        let id: DatasetId = "disdukcapil.penduduk".parse().unwrap();
        assert_eq!(id.agency().as_str(), "disdukcapil");
        assert_eq!(id.name(), "penduduk");
    }

    #[test]
    fn identifier_length_limit() {
        use crate::limits::MAX_IDENT_BYTES;
        let at = "a".repeat(MAX_IDENT_BYTES);
        let over = "a".repeat(MAX_IDENT_BYTES + 1);
        assert!(at.parse::<AgencyId>().is_ok());
        assert!(at.parse::<FieldName>().is_ok());
        assert!(format!("{at}.{at}").parse::<DatasetId>().is_ok());
        let errors = [
            over.parse::<AgencyId>().unwrap_err(),
            over.parse::<FieldName>().unwrap_err(),
            format!("{over}.a").parse::<DatasetId>().unwrap_err(),
            format!("a.{over}").parse::<DatasetId>().unwrap_err(),
        ];
        for e in errors {
            let e = e.to_string();
            assert!(
                e.contains("longer than 128 bytes (limit max_ident_bytes)"),
                "{e}"
            );
        }
    }

    #[test]
    fn field_names() {
        for ok in ["nik", "nama_lengkap", "_x", "A1"] {
            assert!(ok.parse::<FieldName>().is_ok(), "{ok}");
        }
        for bad in ["", "1a", "nik\"", "a b", "a-b", "nik;--", "x\0"] {
            assert!(bad.parse::<FieldName>().is_err(), "{bad:?}");
        }
    }
}

/// Implements `JsonSchema` for an id type as a string with `pattern`,
/// inlined where it is used so that config references show the rule.
macro_rules! string_schema {
    ($ty:ty, $name:literal, $pattern:expr, $max:expr, $description:literal) => {
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "maxLength": $max,
                    "description": $description,
                })
            }
        }
    };
}

string_schema!(
    AgencyId,
    "AgencyId",
    "^[a-z][a-z0-9_-]*$",
    MAX_IDENT_BYTES,
    "An agency id: lowercase ASCII letters, digits, `_` and `-`, starting with a letter."
);
string_schema!(
    DatasetId,
    "DatasetId",
    "^[a-z][a-z0-9_-]*\\.[a-z][a-z0-9_-]*$",
    MAX_IDENT_BYTES * 2 + 1,
    "A dataset id, `<agency>.<dataset>`."
);
string_schema!(
    FieldName,
    "FieldName",
    "^[A-Za-z_][A-Za-z0-9_]*$",
    MAX_IDENT_BYTES,
    "A field (column) name: ASCII letters, digits and `_`, starting with a letter or `_`."
);
