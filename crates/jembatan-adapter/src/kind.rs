//! JSON kinds of exposed columns, as `Describe` reports them.

use std::fmt;

use jembatan_proto::v1 as pb;

/// How a column's values appear in records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnKind {
    /// JSON string.
    String,
    /// JSON number without fraction (64-bit).
    Integer,
    /// JSON number (floating point; NaN and infinities become null).
    Number,
    /// Exact decimal as a JSON string, e.g. `"12500000.00"`.
    Decimal,
    /// JSON true / false.
    Boolean,
    /// `"YYYY-MM-DD"`.
    Date,
    /// `"YYYY-MM-DDTHH:MM:SS[.ffffff]"`, with `Z` when the column has a zone.
    DateTime,
    /// `"HH:MM:SS[.ffffff]"`.
    Time,
    /// Base64 string (standard alphabet, padded).
    Bytes,
    /// Any JSON value.
    Json,
}

impl ColumnKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ColumnKind::String => "string",
            ColumnKind::Integer => "integer",
            ColumnKind::Number => "number",
            ColumnKind::Decimal => "decimal",
            ColumnKind::Boolean => "boolean",
            ColumnKind::Date => "date",
            ColumnKind::DateTime => "datetime",
            ColumnKind::Time => "time",
            ColumnKind::Bytes => "bytes",
            ColumnKind::Json => "json",
        }
    }

    pub fn to_proto(self) -> pb::ColumnKind {
        match self {
            ColumnKind::String => pb::ColumnKind::String,
            ColumnKind::Integer => pb::ColumnKind::Integer,
            ColumnKind::Number => pb::ColumnKind::Number,
            ColumnKind::Decimal => pb::ColumnKind::Decimal,
            ColumnKind::Boolean => pb::ColumnKind::Boolean,
            ColumnKind::Date => pb::ColumnKind::Date,
            ColumnKind::DateTime => pb::ColumnKind::Datetime,
            ColumnKind::Time => pb::ColumnKind::Time,
            ColumnKind::Bytes => pb::ColumnKind::Bytes,
            ColumnKind::Json => pb::ColumnKind::Json,
        }
    }
}

impl fmt::Display for ColumnKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
