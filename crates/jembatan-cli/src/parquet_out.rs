//! Parquet output of `jembatan query --format parquet`: records written
//! as they arrive, a row group at a time, with column types read from the
//! registered JSON Schema of the records (the provider's dataset, or the
//! schema asked for with `--as`).
//!
//! | schema says | Parquet column |
//! | --- | --- |
//! | `"type": "string"` (any `format`, dates included), or an `enum` of strings | `BYTE_ARRAY` (UTF-8 string) |
//! | `"type": "integer"` | `INT64` |
//! | `"type": "number"` | `DOUBLE` |
//! | `"type": "boolean"` | `BOOLEAN` |
//! | anything else (objects, arrays, no type, no schema) | UTF-8 string: a string as is, another value as its JSON text |
//!
//! Every column is optional: `null` and an absent field are both null.
//! A value the column's type does not take (a fractional number in an
//! integer column) stops the output, naming the record and the field.

use std::io::Write;
use std::sync::Arc;

use parquet::basic::{Compression, LogicalType, Repetition, Type as PhysicalType};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use serde_json::{Map, Value};

/// Most records held before they are written as one row group.
pub(crate) const ROW_GROUP_ROWS: usize = 8192;
/// Most bytes of values held before they are written as one row group,
/// whatever the number of records.
const ROW_GROUP_BYTES: usize = 32 << 20;

/// What a column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnType {
    String,
    Integer,
    Number,
    Boolean,
    /// Strings as they are, other values as JSON text.
    Text,
}

impl ColumnType {
    /// The column type of one property of a JSON Schema.
    fn of_property(property: &Value) -> ColumnType {
        let types: Vec<&str> = match property.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
            _ => {
                let all_strings = property
                    .get("enum")
                    .and_then(Value::as_array)
                    .is_some_and(|e| {
                        !e.is_empty() && e.iter().all(|v| v.is_string() || v.is_null())
                    });
                return if all_strings {
                    ColumnType::String
                } else {
                    ColumnType::Text
                };
            }
        };
        let non_null: Vec<&str> = types.into_iter().filter(|t| *t != "null").collect();
        match non_null.as_slice() {
            ["string"] => ColumnType::String,
            ["integer"] => ColumnType::Integer,
            ["number"] | ["integer", "number"] | ["number", "integer"] => ColumnType::Number,
            ["boolean"] => ColumnType::Boolean,
            _ => ColumnType::Text,
        }
    }

    fn name(self) -> &'static str {
        match self {
            ColumnType::String => "a string",
            ColumnType::Integer => "an integer",
            ColumnType::Number => "a number",
            ColumnType::Boolean => "a boolean",
            ColumnType::Text => "text",
        }
    }
}

/// The column types a JSON Schema gives its top-level properties, in name
/// order. Empty for a schema without `properties`.
pub(crate) fn column_types(schema: &Value) -> Vec<(String, ColumnType)> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| {
            p.iter()
                .map(|(name, property)| (name.clone(), ColumnType::of_property(property)))
                .collect()
        })
        .unwrap_or_default()
}

/// Why a record cannot be written to the Parquet file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ParquetError {
    #[error("record {record}: field {field:?} is not one of the file's columns ({columns})")]
    UnknownField {
        record: u64,
        field: String,
        columns: String,
    },
    #[error("record {record}: field {field:?} is {got}, not {want} as {source_of_type} says")]
    WrongType {
        record: u64,
        field: String,
        got: &'static str,
        want: &'static str,
        source_of_type: String,
    },
    #[error("record {record} is not a JSON object")]
    NotAnObject { record: u64 },
    #[error("cannot write the Parquet file: {0}")]
    Write(#[from] parquet::errors::ParquetError),
}

/// One column's values of the row group being gathered.
enum Values {
    Bytes(Vec<ByteArray>),
    Int(Vec<i64>),
    Double(Vec<f64>),
    Bool(Vec<bool>),
}

struct Column {
    name: String,
    kind: ColumnType,
    values: Values,
    /// 1 for a value, 0 for null: one a record.
    levels: Vec<i16>,
}

impl Column {
    fn new(name: String, kind: ColumnType) -> Self {
        let values = match kind {
            ColumnType::String | ColumnType::Text => Values::Bytes(Vec::new()),
            ColumnType::Integer => Values::Int(Vec::new()),
            ColumnType::Number => Values::Double(Vec::new()),
            ColumnType::Boolean => Values::Bool(Vec::new()),
        };
        Column {
            name,
            kind,
            values,
            levels: Vec::new(),
        }
    }

    fn parquet_type(&self) -> Result<Type, parquet::errors::ParquetError> {
        let (physical, logical) = match self.kind {
            ColumnType::String | ColumnType::Text => {
                (PhysicalType::BYTE_ARRAY, Some(LogicalType::String))
            }
            ColumnType::Integer => (PhysicalType::INT64, None),
            ColumnType::Number => (PhysicalType::DOUBLE, None),
            ColumnType::Boolean => (PhysicalType::BOOLEAN, None),
        };
        Type::primitive_type_builder(&self.name, physical)
            .with_logical_type(logical)
            .with_repetition(Repetition::OPTIONAL)
            .build()
    }

    /// Adds one record's value; `None` when the type does not take it,
    /// with the kind of value it is. Returns the bytes it holds.
    fn push(&mut self, value: Option<&Value>) -> Result<usize, &'static str> {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            self.levels.push(0);
            return Ok(0);
        };
        let size = match (&mut self.values, self.kind) {
            (Values::Bytes(out), ColumnType::String) => {
                let s = value.as_str().ok_or(kind_of(value))?;
                out.push(ByteArray::from(s));
                s.len()
            }
            (Values::Bytes(out), _) => {
                let text = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let n = text.len();
                out.push(ByteArray::from(text.into_bytes()));
                n
            }
            (Values::Int(out), _) => {
                out.push(value.as_i64().ok_or(kind_of(value))?);
                8
            }
            (Values::Double(out), _) => {
                out.push(value.as_f64().ok_or(kind_of(value))?);
                8
            }
            (Values::Bool(out), _) => {
                out.push(value.as_bool().ok_or(kind_of(value))?);
                1
            }
        };
        self.levels.push(1);
        Ok(size)
    }

    fn clear(&mut self) {
        self.levels.clear();
        match &mut self.values {
            Values::Bytes(v) => v.clear(),
            Values::Int(v) => v.clear(),
            Values::Double(v) => v.clear(),
            Values::Bool(v) => v.clear(),
        }
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() => "an integer",
        Value::Number(n) if n.is_u64() => "an integer past INT64's range",
        Value::Number(_) => "a fractional number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Writes one row group of `columns`' gathered values.
fn write_group<W: Write + Send>(
    writer: &mut SerializedFileWriter<W>,
    columns: &[Column],
) -> Result<(), ParquetError> {
    let mut group = writer.next_row_group()?;
    for column in columns {
        let Some(mut out) = group.next_column()? else {
            break;
        };
        let levels = Some(column.levels.as_slice());
        match &column.values {
            Values::Bytes(v) => {
                out.typed::<ByteArrayType>().write_batch(v, levels, None)?;
            }
            Values::Int(v) => {
                out.typed::<Int64Type>().write_batch(v, levels, None)?;
            }
            Values::Double(v) => {
                out.typed::<DoubleType>().write_batch(v, levels, None)?;
            }
            Values::Bool(v) => {
                out.typed::<BoolType>().write_batch(v, levels, None)?;
            }
        }
        out.close()?;
    }
    group.close()?;
    Ok(())
}

/// Where the columns' types come from: a registered schema, or nowhere.
#[derive(Debug, Clone)]
pub(crate) struct Types {
    /// `<dataset>@<version>`, for error messages; `None` when no schema
    /// is known (every column is then text).
    pub(crate) schema: Option<String>,
    pub(crate) columns: Vec<(String, ColumnType)>,
}

impl Types {
    fn of(&self, field: &str) -> ColumnType {
        self.columns
            .iter()
            .find(|(name, _)| name == field)
            .map_or(ColumnType::Text, |(_, t)| *t)
    }
}

/// A Parquet file being written: columns fixed by `--field`, else by the
/// first record in its order (else, with no record, by the schema's
/// properties in name order).
pub(crate) struct ParquetSink<W: Write + Send> {
    out: Option<W>,
    writer: Option<SerializedFileWriter<W>>,
    types: Types,
    /// Set once known.
    columns: Option<Vec<Column>>,
    /// Records gathered for the next row group, and their bytes.
    rows: usize,
    bytes: usize,
    /// Records written so far, counted from 1 in errors.
    seen: u64,
}

impl<W: Write + Send> ParquetSink<W> {
    pub(crate) fn new(out: W, types: Types, fields: Option<Vec<String>>) -> Self {
        let mut sink = ParquetSink {
            out: Some(out),
            writer: None,
            types,
            columns: None,
            rows: 0,
            bytes: 0,
            seen: 0,
        };
        if let Some(fields) = fields {
            sink.set_columns(fields);
        }
        sink
    }

    fn set_columns(&mut self, names: Vec<String>) {
        let columns = names
            .into_iter()
            .map(|name| {
                let kind = self.types.of(&name);
                Column::new(name, kind)
            })
            .collect();
        self.columns = Some(columns);
    }

    /// Adds one record (a JSON object as the broker sent it); writes a row
    /// group when enough are gathered.
    pub(crate) fn write(&mut self, record: &str) -> Result<(), ParquetError> {
        self.seen += 1;
        let record_no = self.seen;
        let object: Map<String, Value> = match serde_json::from_str(record) {
            Ok(Value::Object(map)) => map,
            _ => return Err(ParquetError::NotAnObject { record: record_no }),
        };
        if self.columns.is_none() {
            // in the record's order, as the broker sent it
            let keys = jembatan_core::record::record_keys(record)
                .map(|keys| keys.into_iter().map(str::to_owned).collect())
                .unwrap_or_else(|_| object.keys().cloned().collect());
            self.set_columns(keys);
        }
        let source_of_type = || {
            self.types
                .schema
                .clone()
                .unwrap_or_else(|| "the column".into())
        };
        let columns = self.columns.as_mut().expect("columns set above");
        if let Some(extra) = object
            .keys()
            .find(|k| !columns.iter().any(|c| &c.name == *k))
        {
            return Err(ParquetError::UnknownField {
                record: record_no,
                field: extra.clone(),
                columns: columns
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        for column in columns.iter_mut() {
            match column.push(object.get(&column.name)) {
                Ok(n) => self.bytes += n,
                Err(got) => {
                    let err = ParquetError::WrongType {
                        record: record_no,
                        field: column.name.clone(),
                        got,
                        want: column.kind.name(),
                        source_of_type: source_of_type(),
                    };
                    return Err(err);
                }
            }
        }
        self.rows += 1;
        if self.rows >= ROW_GROUP_ROWS || self.bytes >= ROW_GROUP_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// The file writer, opened with the columns' schema on first use.
    fn writer(&mut self) -> Result<&mut SerializedFileWriter<W>, ParquetError> {
        if self.writer.is_none() {
            if self.columns.is_none() {
                let names = self.types.columns.iter().map(|(n, _)| n.clone()).collect();
                self.set_columns(names);
            }
            let fields = self
                .columns
                .as_ref()
                .map(|cols| {
                    cols.iter()
                        .map(|c| c.parquet_type().map(Arc::new))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?
                .unwrap_or_default();
            let schema = Type::group_type_builder("record")
                .with_fields(fields)
                .build()?;
            let props = WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_created_by(format!("jembatan {}", env!("CARGO_PKG_VERSION")))
                .build();
            let out = self.out.take().expect("the output is taken once");
            self.writer = Some(SerializedFileWriter::new(
                out,
                Arc::new(schema),
                Arc::new(props),
            )?);
        }
        Ok(self.writer.as_mut().expect("opened above"))
    }

    /// Writes the records gathered as one row group.
    fn flush(&mut self) -> Result<(), ParquetError> {
        if self.rows == 0 {
            return Ok(());
        }
        self.writer()?;
        let (Some(writer), Some(columns)) = (self.writer.as_mut(), self.columns.as_deref()) else {
            return Ok(());
        };
        let written = write_group(writer, columns);
        self.columns.iter_mut().flatten().for_each(Column::clear);
        self.rows = 0;
        self.bytes = 0;
        written
    }

    /// Writes the last row group and the footer; the file is complete.
    pub(crate) fn finish(mut self) -> Result<W, ParquetError> {
        self.flush()?;
        self.writer()?;
        let writer = self.writer.take().expect("opened above");
        Ok(writer.into_inner()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    fn file() -> std::fs::File {
        tempfile::tempfile().unwrap()
    }

    fn types() -> Types {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "nik": {"type": "string"},
                "born": {"type": "string", "format": "date"},
                "children": {"type": ["integer", "null"]},
                "income": {"type": "number"},
                "alive": {"type": "boolean"},
                "sex": {"enum": ["L", "P"]},
                "address": {"type": "object"},
            }
        });
        Types {
            schema: Some("x.y@1".into()),
            columns: column_types(&schema),
        }
    }

    /// Writes `records` and reads the file back as JSON objects.
    fn round_trip(records: &[&str], fields: Option<Vec<String>>) -> Vec<Value> {
        let mut sink = ParquetSink::new(file(), types(), fields);
        for r in records {
            sink.write(r).unwrap();
        }
        let reader = SerializedFileReader::new(sink.finish().unwrap()).unwrap();
        reader
            .get_row_iter(None)
            .unwrap()
            .map(|row| {
                let row = row.unwrap();
                Value::Object(
                    row.get_column_iter()
                        .map(|(k, f)| (k.clone(), field_json(f)))
                        .collect(),
                )
            })
            .collect()
    }

    fn field_json(f: &Field) -> Value {
        match f {
            Field::Null => Value::Null,
            Field::Bool(b) => Value::Bool(*b),
            Field::Long(n) => Value::from(*n),
            Field::Double(x) => Value::from(*x),
            Field::Str(s) => Value::String(s.clone()),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn schema_types_become_column_types() {
        let t = types();
        let got: Vec<(&str, ColumnType)> =
            t.columns.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        // in name order
        assert_eq!(
            got,
            [
                ("address", ColumnType::Text),
                ("alive", ColumnType::Boolean),
                ("born", ColumnType::String),
                ("children", ColumnType::Integer),
                ("income", ColumnType::Number),
                ("nik", ColumnType::String),
                ("sex", ColumnType::String),
            ]
        );
    }

    #[test]
    fn records_come_back_typed_with_nulls() {
        let records = [
            r#"{"nik":"1","born":"1990-01-02","children":2,"income":1.5,"alive":true,"sex":"L","address":{"rt":"001"}}"#,
            r#"{"nik":"2","born":null,"income":3,"alive":false,"sex":"P"}"#,
        ];
        let got = round_trip(&records, None);
        assert_eq!(
            got[0],
            serde_json::json!({"nik":"1","born":"1990-01-02","children":2,"income":1.5,
                "alive":true,"sex":"L","address":"{\"rt\":\"001\"}"})
        );
        assert_eq!(
            got[1],
            serde_json::json!({"nik":"2","born":null,"children":null,"income":3.0,
                "alive":false,"sex":"P","address":null})
        );
    }

    #[test]
    fn many_records_make_several_row_groups() {
        let records: Vec<String> = (0..ROW_GROUP_ROWS * 2 + 5)
            .map(|i| format!(r#"{{"nik":"{i}","children":{i}}}"#))
            .collect();
        let mut sink = ParquetSink::new(file(), types(), None);
        for r in &records {
            sink.write(r).unwrap();
        }
        let reader = SerializedFileReader::new(sink.finish().unwrap()).unwrap();
        assert_eq!(reader.metadata().num_row_groups(), 3);
        assert_eq!(
            reader.metadata().file_metadata().num_rows(),
            records.len() as i64
        );
    }

    #[test]
    fn no_record_gives_the_columns_asked_for() {
        let got = round_trip(&[], Some(vec!["nik".into(), "alive".into()]));
        assert!(got.is_empty());
        let mut sink = ParquetSink::new(file(), types(), Some(vec!["nik".into()]));
        sink.write(r#"{"nik":"1"}"#).unwrap();
        let reader = SerializedFileReader::new(sink.finish().unwrap()).unwrap();
        let schema = reader.metadata().file_metadata().schema_descr();
        assert_eq!(schema.num_columns(), 1);
    }

    #[test]
    fn values_the_column_does_not_take_are_refused_by_record_and_field() {
        let cases = [
            (
                "fraction in an integer column",
                r#"{"children":1.5}"#,
                "record 1: field \"children\" is a fractional number, not an integer as x.y@1 says",
            ),
            (
                "integer past INT64",
                r#"{"children":18446744073709551615}"#,
                "record 1: field \"children\" is an integer past INT64's range, not an integer as x.y@1 says",
            ),
            (
                "string in a boolean column",
                r#"{"alive":"yes"}"#,
                "record 1: field \"alive\" is a string, not a boolean as x.y@1 says",
            ),
            (
                "number in a string column",
                r#"{"nik":3507}"#,
                "record 1: field \"nik\" is an integer, not a string as x.y@1 says",
            ),
            ("not an object", "[1]", "record 1 is not a JSON object"),
        ];
        for (name, record, want) in cases {
            let mut sink = ParquetSink::new(file(), types(), None);
            let err = sink.write(record).unwrap_err();
            assert_eq!(err.to_string(), want, "{name}");
        }
        let mut sink = ParquetSink::new(file(), types(), Some(vec!["nik".into()]));
        let err = sink.write(r#"{"nik":"1","alive":true}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "record 1: field \"alive\" is not one of the file's columns (nik)"
        );
    }

    #[test]
    fn without_a_schema_every_column_is_text() {
        let untyped = Types {
            schema: None,
            columns: Vec::new(),
        };
        let mut sink = ParquetSink::new(file(), untyped, None);
        sink.write(r#"{"a":"x","b":2,"c":true}"#).unwrap();
        let reader = SerializedFileReader::new(sink.finish().unwrap()).unwrap();
        let row = reader.get_row_iter(None).unwrap().next().unwrap().unwrap();
        let got: Vec<Value> = row.get_column_iter().map(|(_, f)| field_json(f)).collect();
        assert_eq!(got, ["x", "2", "true"]);
    }
}
