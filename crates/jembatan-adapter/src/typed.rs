//! Filters made SQL-ready: each field resolved to a whitelisted column and
//! each value coerced to that column's type, so comparisons are typed on
//! every backend.

use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use jembatan_core::{Filter, InvalidArgument, Operator, Predicate, Scalar};
use rust_decimal::Decimal;

use crate::db::{ColumnType, Decoder};
use crate::kind::ColumnKind;
use crate::sql::{BindValue, CmpOp, ColRef, Cond, Dialect};

/// Converts a validated filter into a typed condition. `column` resolves a
/// field to its column type; the caller has already checked that every
/// field is allowed.
pub(crate) fn typed_filter(
    filter: &Filter,
    dialect: Dialect,
    column: &dyn Fn(&str) -> Option<ColumnType>,
) -> Result<Cond, InvalidArgument> {
    Ok(match filter {
        Filter::All(list) => Cond::All(
            list.iter()
                .map(|f| typed_filter(f, dialect, column))
                .collect::<Result<_, _>>()?,
        ),
        Filter::Any(list) => Cond::Any(
            list.iter()
                .map(|f| typed_filter(f, dialect, column))
                .collect::<Result<_, _>>()?,
        ),
        Filter::Not(inner) => Cond::Not(Box::new(typed_filter(inner, dialect, column)?)),
        Filter::Predicate(p) => typed_predicate(p, dialect, column)?,
    })
}

fn invalid(message: String) -> InvalidArgument {
    InvalidArgument::new("filter", message)
}

fn typed_predicate(
    p: &Predicate,
    dialect: Dialect,
    column: &dyn Fn(&str) -> Option<ColumnType>,
) -> Result<Cond, InvalidArgument> {
    let field = p.field.as_str();
    let ty = column(field).ok_or_else(|| invalid(format!("unknown field {field}")))?;
    let col = ColRef {
        name: field.to_owned(),
        cast_to_text: ty.cast_to_text,
    };
    let op = p.op;
    if matches!(ty.kind, ColumnKind::Bytes | ColumnKind::Json)
        && !matches!(op, Operator::IsNull | Operator::IsNotNull)
    {
        return Err(invalid(format!(
            "field {field} is a {} column; it can only be tested with is_null or is_not_null",
            ty.kind
        )));
    }
    let one = || {
        p.value
            .as_ref()
            .ok_or_else(|| invalid(format!("{} on field {field} needs a value", op.as_str())))
    };
    let cmp = |cmp: CmpOp| -> Result<Cond, InvalidArgument> {
        Ok(Cond::Cmp {
            col: col.clone(),
            op: cmp,
            value: coerce(field, ty, one()?, dialect)?,
        })
    };
    Ok(match op {
        Operator::Eq => cmp(CmpOp::Eq)?,
        Operator::Ne => cmp(CmpOp::Ne)?,
        Operator::Lt => cmp(CmpOp::Lt)?,
        Operator::Le => cmp(CmpOp::Le)?,
        Operator::Gt => cmp(CmpOp::Gt)?,
        Operator::Ge => cmp(CmpOp::Ge)?,
        Operator::In => Cond::In {
            col: col.clone(),
            values: p
                .values
                .iter()
                .map(|v| coerce(field, ty, v, dialect))
                .collect::<Result<_, _>>()?,
        },
        Operator::Prefix => {
            if ty.kind != ColumnKind::String || ty.decoder == Decoder::Uuid {
                return Err(invalid(format!(
                    "prefix needs a text column; field {field} is {}",
                    ty.kind
                )));
            }
            let Scalar::String(prefix) = one()? else {
                return Err(invalid(format!(
                    "prefix on field {field} needs a string value"
                )));
            };
            Cond::Prefix {
                col,
                prefix: prefix.clone(),
            }
        }
        Operator::IsNull => Cond::IsNull(col),
        Operator::IsNotNull => Cond::IsNotNull(col),
    })
}

/// Coerces a filter value to the column's type.
pub(crate) fn coerce(
    field: &str,
    ty: ColumnType,
    v: &Scalar,
    dialect: Dialect,
) -> Result<BindValue, InvalidArgument> {
    let kind = ty.kind;
    // the value itself is never quoted: the message reaches the
    // adapter's log and the broker's audit log, which must not hold it
    let given = match v {
        Scalar::String(s) => format!("a string of {} bytes", s.len()),
        Scalar::Int(_) => "an integer".to_owned(),
        Scalar::Float(_) => "a number".to_owned(),
        Scalar::Bool(_) => "a boolean".to_owned(),
    };
    let wrong = |expected: &str| {
        invalid(format!(
            "field {field} holds {kind} values; the value given ({given}) is not {expected}"
        ))
    };
    let sqlite = dialect == Dialect::Sqlite;
    Ok(match kind {
        ColumnKind::String => match (v, ty.decoder) {
            (Scalar::String(s), Decoder::Uuid) => {
                BindValue::Uuid(uuid::Uuid::parse_str(s).map_err(|_| wrong("a UUID"))?)
            }
            (Scalar::String(s), _) => BindValue::Text(s.clone()),
            _ => return Err(wrong("a string")),
        },
        ColumnKind::Integer => match v {
            Scalar::Int(i) => BindValue::Int(*i),
            _ => return Err(wrong("an integer")),
        },
        ColumnKind::Number => match v {
            Scalar::Int(i) => BindValue::Float(*i as f64),
            Scalar::Float(f) => BindValue::Float(*f),
            _ => return Err(wrong("a number")),
        },
        ColumnKind::Decimal => BindValue::Decimal(match v {
            Scalar::String(s) => Decimal::from_str_exact(s.trim())
                .or_else(|_| Decimal::from_scientific(s.trim()))
                .map_err(|_| wrong("a decimal number"))?,
            Scalar::Int(i) => Decimal::from(*i),
            Scalar::Float(f) => Decimal::try_from(*f).map_err(|_| wrong("a decimal number"))?,
            Scalar::Bool(_) => return Err(wrong("a decimal number")),
        }),
        ColumnKind::Boolean => match v {
            Scalar::Bool(b) => BindValue::Bool(*b),
            _ => return Err(wrong("a boolean")),
        },
        ColumnKind::Date => {
            let Scalar::String(s) = v else {
                return Err(wrong("a date (YYYY-MM-DD)"));
            };
            let d = NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| wrong("a date (YYYY-MM-DD)"))?;
            if sqlite {
                BindValue::Text(d.format("%Y-%m-%d").to_string())
            } else {
                BindValue::Date(d)
            }
        }
        ColumnKind::DateTime => {
            let expected =
                "a date-time (YYYY-MM-DDTHH:MM:SS[.ffffff], with Z or an offset for zoned columns)";
            let Scalar::String(s) = v else {
                return Err(wrong(expected));
            };
            let naive = parse_naive_datetime(s);
            if sqlite {
                // SQLite compares the stored text; the value is checked, then bound as given
                if naive.is_none() && DateTime::parse_from_rfc3339(s).is_err() {
                    return Err(wrong(expected));
                }
                BindValue::Text(s.clone())
            } else if ty.decoder == Decoder::DateTimeUtc {
                match DateTime::parse_from_rfc3339(s) {
                    Ok(d) => BindValue::DateTimeUtc(d.to_utc()),
                    Err(_) => {
                        BindValue::DateTimeUtc(naive.ok_or_else(|| wrong(expected))?.and_utc())
                    }
                }
            } else {
                BindValue::DateTime(naive.ok_or_else(|| wrong(expected))?)
            }
        }
        ColumnKind::Time => {
            let Scalar::String(s) = v else {
                return Err(wrong("a time (HH:MM:SS[.ffffff])"));
            };
            let t = NaiveTime::parse_from_str(s, "%H:%M:%S%.f")
                .map_err(|_| wrong("a time (HH:MM:SS[.ffffff])"))?;
            if sqlite {
                BindValue::Text(s.clone())
            } else {
                BindValue::Time(t)
            }
        }
        ColumnKind::Bytes | ColumnKind::Json => return Err(wrong("comparable")),
    })
}

fn parse_naive_datetime(s: &str) -> Option<NaiveDateTime> {
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .or_else(|| NaiveDateTime::from_str(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{map_mysql, map_postgres, map_sqlite};

    fn s(v: &str) -> Scalar {
        Scalar::String(v.into())
    }

    #[test]
    fn values_coerce_to_column_types() {
        let pg = |dt: &str| map_postgres(dt, "", "b").unwrap();
        let d = NaiveDate::from_ymd_opt(2020, 1, 31).unwrap();
        let cases: Vec<(&str, ColumnType, Dialect, Scalar, BindValue)> = vec![
            (
                "int",
                pg("integer"),
                Dialect::Postgres,
                Scalar::Int(12),
                BindValue::Int(12),
            ),
            (
                "date",
                pg("date"),
                Dialect::Postgres,
                s("2020-01-31"),
                BindValue::Date(d),
            ),
            (
                "date on sqlite",
                map_sqlite("DATE"),
                Dialect::Sqlite,
                s("2020-01-31"),
                BindValue::Text("2020-01-31".into()),
            ),
            (
                "decimal from string",
                pg("numeric"),
                Dialect::Postgres,
                s("12.50"),
                BindValue::Decimal(Decimal::new(1250, 2)),
            ),
            (
                "decimal from number",
                map_mysql("decimal", "decimal(10,2)", false).unwrap(),
                Dialect::MySql,
                Scalar::Float(12.5),
                BindValue::Decimal(Decimal::new(125, 1)),
            ),
            (
                "float from int",
                pg("double precision"),
                Dialect::Postgres,
                Scalar::Int(3),
                BindValue::Float(3.0),
            ),
            (
                "timestamptz",
                pg("timestamp with time zone"),
                Dialect::Postgres,
                s("2020-01-31T08:00:00+07:00"),
                BindValue::DateTimeUtc(d.and_hms_opt(1, 0, 0).unwrap().and_utc()),
            ),
            (
                "timestamp",
                pg("timestamp without time zone"),
                Dialect::Postgres,
                s("2020-01-31 08:00:00"),
                BindValue::DateTime(d.and_hms_opt(8, 0, 0).unwrap()),
            ),
            (
                "time",
                pg("time without time zone"),
                Dialect::Postgres,
                s("08:30:00"),
                BindValue::Time(NaiveTime::from_hms_opt(8, 30, 0).unwrap()),
            ),
            (
                "bool",
                pg("boolean"),
                Dialect::Postgres,
                Scalar::Bool(true),
                BindValue::Bool(true),
            ),
            (
                "injection text stays a value",
                pg("text"),
                Dialect::Postgres,
                s("' OR 1=1 --"),
                BindValue::Text("' OR 1=1 --".into()),
            ),
        ];
        for (name, ty, dialect, v, want) in cases {
            assert_eq!(coerce("f", ty, &v, dialect).expect(name), want, "{name}");
        }
    }

    #[test]
    fn coercion_errors_name_the_field() {
        let pg = |dt: &str| map_postgres(dt, "", "b").unwrap();
        let cases: Vec<(&str, ColumnType, Scalar, &str)> = vec![
            (
                "string for integer",
                pg("integer"),
                s("12"),
                "field f holds integer values; the value given (a string of 2 bytes) is not an integer",
            ),
            (
                "float for integer",
                pg("bigint"),
                Scalar::Float(1.5),
                "is not an integer",
            ),
            (
                "bad date",
                pg("date"),
                s("31-01-2020"),
                "is not a date (YYYY-MM-DD)",
            ),
            (
                "impossible date",
                pg("date"),
                s("2020-02-30"),
                "is not a date",
            ),
            (
                "bad decimal",
                pg("numeric"),
                s("12,50"),
                "is not a decimal number",
            ),
            (
                "bool for decimal",
                pg("numeric"),
                Scalar::Bool(true),
                "is not a decimal number",
            ),
            (
                "int for text",
                pg("text"),
                Scalar::Int(1),
                "is not a string",
            ),
            (
                "string for bool",
                pg("boolean"),
                s("true"),
                "is not a boolean",
            ),
            ("bad uuid", pg("uuid"), s("x"), "is not a UUID"),
            (
                "bad time",
                pg("time without time zone"),
                s("25:00:00"),
                "is not a time",
            ),
        ];
        for (name, ty, v, want) in cases {
            let err = coerce("f", ty, &v, Dialect::Postgres)
                .expect_err(name)
                .to_string();
            assert!(err.starts_with("invalid filter: "), "{name}: {err}");
            assert!(err.contains(want), "{name}: {err}");
            // the value itself is described, never quoted
            if let Scalar::String(text) = &v {
                assert!(!err.contains(text.as_str()), "{name}: {err}");
            }
        }
    }

    #[test]
    fn operators_are_checked_against_kinds() {
        let f: Filter = serde_json::from_value(serde_json::json!(
            {"field": "foto", "op": "eq", "value": "x"}
        ))
        .unwrap();
        let bytes = map_postgres("bytea", "", "b").unwrap();
        let err = typed_filter(&f, Dialect::Postgres, &|_| Some(bytes)).unwrap_err();
        assert!(
            err.to_string().contains("can only be tested with is_null"),
            "{err}"
        );

        let f: Filter = serde_json::from_value(serde_json::json!(
            {"field": "umur", "op": "prefix", "value": "1"}
        ))
        .unwrap();
        let int = map_postgres("integer", "", "b").unwrap();
        let err = typed_filter(&f, Dialect::Postgres, &|_| Some(int)).unwrap_err();
        assert!(
            err.to_string().contains("prefix needs a text column"),
            "{err}"
        );

        let f: Filter = serde_json::from_value(serde_json::json!({"not": {"any": [
            {"field": "umur", "op": "in", "values": [1, 2]},
            {"field": "umur", "op": "is_null"}
        ]}}))
        .unwrap();
        let cond = typed_filter(&f, Dialect::Postgres, &|_| Some(int)).unwrap();
        let col = ColRef {
            name: "umur".into(),
            cast_to_text: false,
        };
        assert_eq!(
            cond,
            Cond::Not(Box::new(Cond::Any(vec![
                Cond::In {
                    col: col.clone(),
                    values: vec![BindValue::Int(1), BindValue::Int(2)]
                },
                Cond::IsNull(col),
            ])))
        );
    }
}
