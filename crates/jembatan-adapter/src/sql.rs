//! The one SQL renderer: whitelisted identifiers quoted per dialect, every
//! value a bound parameter.
//!
//! Nothing from a request reaches SQL text: column and table names come from
//! the whitelist (checked against the live schema at startup), operators are
//! a closed set, and values travel as typed bind parameters.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use rust_decimal::Decimal;

/// SQL dialect of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
    MySql,
}

impl Dialect {
    /// Quotes an identifier, doubling any embedded quote character.
    pub(crate) fn quote_ident(self, name: &str) -> String {
        let q = match self {
            Dialect::Sqlite | Dialect::Postgres => '"',
            Dialect::MySql => '`',
        };
        let mut out = String::with_capacity(name.len() + 2);
        out.push(q);
        for c in name.chars() {
            if c == q {
                out.push(q);
            }
            out.push(c);
        }
        out.push(q);
        out
    }

    fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Postgres => format!("${n}"),
            Dialect::Sqlite | Dialect::MySql => "?".to_owned(),
        }
    }

    /// The `ESCAPE` clause of prefix matches: a backslash, written as a
    /// string literal. MariaDB reads backslashes in literals as escapes
    /// (the adapter's connections clear `NO_BACKSLASH_ESCAPES`), so it is
    /// doubled there.
    fn like_escape(self) -> &'static str {
        match self {
            Dialect::Sqlite | Dialect::Postgres => r"ESCAPE '\'",
            Dialect::MySql => r"ESCAPE '\\'",
        }
    }

    fn text_cast(self) -> &'static str {
        match self {
            Dialect::Sqlite | Dialect::Postgres => "TEXT",
            Dialect::MySql => "CHAR",
        }
    }
}

/// A typed value bound to a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum BindValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Decimal(Decimal),
    Date(NaiveDate),
    DateTime(NaiveDateTime),
    DateTimeUtc(DateTime<Utc>),
    Time(NaiveTime),
    Uuid(uuid::Uuid),
}

/// A whitelisted column as it appears in SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ColRef {
    pub(crate) name: String,
    /// Read and compare the column as text (types the driver cannot decode
    /// natively, e.g. PostgreSQL enums).
    pub(crate) cast_to_text: bool,
}

impl ColRef {
    fn render(&self, dialect: Dialect) -> String {
        let q = dialect.quote_ident(&self.name);
        if self.cast_to_text && dialect != Dialect::Sqlite {
            format!("CAST({q} AS {})", dialect.text_cast())
        } else {
            q
        }
    }
}

/// Comparison operators that take one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A filter whose fields are whitelisted columns and whose values are
/// coerced to the columns' types.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cond {
    Cmp {
        col: ColRef,
        op: CmpOp,
        value: BindValue,
    },
    In {
        col: ColRef,
        values: Vec<BindValue>,
    },
    /// `col` starts with `prefix`; wildcards in `prefix` are literal.
    Prefix {
        col: ColRef,
        prefix: String,
    },
    IsNull(ColRef),
    IsNotNull(ColRef),
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
}

/// Escapes `%`, `_` and `\` so a LIKE pattern matches them literally.
pub(crate) fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A SELECT over one whitelisted table.
#[derive(Debug)]
pub(crate) struct Select<'a> {
    pub(crate) schema: Option<&'a str>,
    pub(crate) table: &'a str,
    pub(crate) columns: &'a [ColRef],
    pub(crate) row_filter: Option<&'a Cond>,
    pub(crate) filter: Option<&'a Cond>,
    pub(crate) order_by: Option<&'a str>,
    pub(crate) limit: Option<u64>,
}

/// SQL text and its bind values, in placeholder order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rendered {
    pub(crate) sql: String,
    pub(crate) binds: Vec<BindValue>,
}

struct Renderer {
    dialect: Dialect,
    sql: String,
    binds: Vec<BindValue>,
}

impl Renderer {
    /// `CASE WHEN <every scope condition> THEN 1 ELSE 0 END`, whether a
    /// row is in scope, then `, <columns> FROM [schema.]table`: the tail of
    /// a change read's result columns.
    fn scope_flag_columns_from(
        &mut self,
        scope: &[&Cond],
        columns: &[ColRef],
        schema: Option<&str>,
        table: &str,
    ) {
        self.sql.push_str("CASE WHEN ");
        if scope.is_empty() {
            self.sql.push_str("1=1");
        }
        for (i, c) in scope.iter().enumerate() {
            if i > 0 {
                self.sql.push_str(" AND ");
            }
            self.sql.push('(');
            self.cond(c);
            self.sql.push(')');
        }
        self.sql.push_str(" THEN 1 ELSE 0 END");
        for c in columns {
            self.sql.push_str(", ");
            self.sql.push_str(&c.render(self.dialect));
        }
        self.sql.push_str(" FROM ");
        if let Some(schema) = schema {
            self.sql.push_str(&self.dialect.quote_ident(schema));
            self.sql.push('.');
        }
        self.sql.push_str(&self.dialect.quote_ident(table));
    }

    fn bind(&mut self, v: BindValue) {
        self.binds.push(v);
        let ph = self.dialect.placeholder(self.binds.len());
        self.sql.push_str(&ph);
    }

    fn cond(&mut self, c: &Cond) {
        let d = self.dialect;
        match c {
            Cond::Cmp { col, op, value } => {
                self.sql.push_str(&col.render(d));
                self.sql.push(' ');
                self.sql.push_str(op.sql());
                self.sql.push(' ');
                self.bind(value.clone());
            }
            Cond::In { col, values } => {
                self.sql.push_str(&col.render(d));
                self.sql.push_str(" IN (");
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        self.sql.push_str(", ");
                    }
                    self.bind(v.clone());
                }
                self.sql.push(')');
            }
            Cond::Prefix { col, prefix } => {
                self.sql.push_str(&col.render(d));
                self.sql.push_str(" LIKE ");
                self.bind(BindValue::Text(format!("{}%", escape_like(prefix))));
                self.sql.push(' ');
                self.sql.push_str(d.like_escape());
            }
            Cond::IsNull(col) => {
                self.sql.push_str(&col.render(d));
                self.sql.push_str(" IS NULL");
            }
            Cond::IsNotNull(col) => {
                self.sql.push_str(&col.render(d));
                self.sql.push_str(" IS NOT NULL");
            }
            Cond::All(list) => self.list(list, " AND ", "1=1"),
            Cond::Any(list) => self.list(list, " OR ", "1=0"),
            Cond::Not(inner) => {
                self.sql.push_str("NOT (");
                self.cond(inner);
                self.sql.push(')');
            }
        }
    }

    fn list(&mut self, list: &[Cond], sep: &str, empty: &str) {
        if list.is_empty() {
            self.sql.push_str(empty);
            return;
        }
        self.sql.push('(');
        for (i, c) in list.iter().enumerate() {
            if i > 0 {
                self.sql.push_str(sep);
            }
            self.cond(c);
        }
        self.sql.push(')');
    }
}

/// Renders a SELECT with its bind values.
pub(crate) fn render(dialect: Dialect, s: &Select<'_>) -> Rendered {
    let mut r = Renderer {
        dialect,
        sql: String::from("SELECT "),
        binds: Vec::new(),
    };
    for (i, c) in s.columns.iter().enumerate() {
        if i > 0 {
            r.sql.push_str(", ");
        }
        r.sql.push_str(&c.render(dialect));
        if c.cast_to_text && dialect != Dialect::Sqlite {
            r.sql.push_str(" AS ");
            r.sql.push_str(&dialect.quote_ident(&c.name));
        }
    }
    r.sql.push_str(" FROM ");
    if let Some(schema) = s.schema {
        r.sql.push_str(&dialect.quote_ident(schema));
        r.sql.push('.');
    }
    r.sql.push_str(&dialect.quote_ident(s.table));
    let conds: Vec<&Cond> = [s.row_filter, s.filter].into_iter().flatten().collect();
    for (i, c) in conds.iter().enumerate() {
        r.sql.push_str(if i == 0 { " WHERE (" } else { " AND (" });
        r.cond(c);
        r.sql.push(')');
    }
    if let Some(key) = s.order_by {
        r.sql.push_str(" ORDER BY ");
        r.sql.push_str(&dialect.quote_ident(key));
    }
    if let Some(limit) = s.limit {
        r.sql.push_str(" LIMIT ");
        r.bind(BindValue::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
    }
    Rendered {
        sql: r.sql,
        binds: r.binds,
    }
}

/// The newest change value a poll may return, by the database's clock:
/// `now - lag`. Integer change columns have none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Horizon {
    /// A timestamp with a zone (PostgreSQL `timestamptz`, MariaDB
    /// `TIMESTAMP`), or text SQLite reads as one.
    Zoned(std::time::Duration),
    /// A timestamp without a zone, compared with the database's local
    /// time (PostgreSQL `timestamp`, MariaDB `DATETIME`; SQLite's `now`
    /// is UTC).
    Local(std::time::Duration),
}

/// A change poll: the rows after a position in `(change, key)` order,
/// with whether each is a deletion and whether it is in scope.
#[derive(Debug)]
pub(crate) struct ChangeSelect<'a> {
    pub(crate) schema: Option<&'a str>,
    pub(crate) table: &'a str,
    pub(crate) change: &'a ColRef,
    pub(crate) key: &'a ColRef,
    /// Columns of the record, read for upserts in scope.
    pub(crate) columns: &'a [ColRef],
    /// Marks deletions (tombstones).
    pub(crate) deleted: Option<&'a Cond>,
    /// The dataset's row filter and the request's filter: the scope.
    pub(crate) scope: &'a [&'a Cond],
    /// `(change, key)` strictly after which rows are returned.
    pub(crate) after: Option<(BindValue, BindValue)>,
    pub(crate) horizon: Option<Horizon>,
    pub(crate) limit: u64,
}

/// Renders a change poll. Its result columns are, in order: the change
/// value, the key, `1` when the row is deleted (else `0`), `1` when it is
/// in scope (else `0`), then `columns`.
pub(crate) fn render_changes(dialect: Dialect, s: &ChangeSelect<'_>) -> Rendered {
    let mut r = Renderer {
        dialect,
        sql: String::from("SELECT "),
        binds: Vec::new(),
    };
    let change = s.change.render(dialect);
    let key = s.key.render(dialect);
    r.sql.push_str(&change);
    r.sql.push_str(", ");
    r.sql.push_str(&key);
    r.sql.push_str(", CASE WHEN ");
    match s.deleted {
        Some(c) => {
            r.sql.push('(');
            r.cond(c);
            r.sql.push(')');
        }
        None => r.sql.push_str("1=0"),
    }
    r.sql.push_str(" THEN 1 ELSE 0 END, ");
    r.scope_flag_columns_from(s.scope, s.columns, s.schema, s.table);
    r.sql.push_str(" WHERE ");
    r.sql.push_str(&change);
    r.sql.push_str(" IS NOT NULL");
    if let Some((after_change, after_key)) = &s.after {
        // spelled out rather than a row comparison, with the range on the
        // change column alone said first: PostgreSQL reads only that as
        // the bounds of a scan of an index on (change, key), and would
        // otherwise walk the index from its start and filter every change
        // before the position out, on every poll
        r.sql.push_str(" AND ");
        r.sql.push_str(&change);
        r.sql.push_str(" >= ");
        r.bind(after_change.clone());
        r.sql.push_str(" AND (");
        r.sql.push_str(&change);
        r.sql.push_str(" > ");
        r.bind(after_change.clone());
        r.sql.push_str(" OR (");
        r.sql.push_str(&change);
        r.sql.push_str(" = ");
        r.bind(after_change.clone());
        r.sql.push_str(" AND ");
        r.sql.push_str(&key);
        r.sql.push_str(" > ");
        r.bind(after_key.clone());
        r.sql.push_str("))");
    }
    if let Some(horizon) = s.horizon {
        let lag = match horizon {
            Horizon::Zoned(lag) | Horizon::Local(lag) => lag,
        };
        r.sql.push_str(" AND ");
        match dialect {
            Dialect::Sqlite => {
                // julianday reads both the 'T' and the ' ' forms, and offsets
                r.sql.push_str("julianday(");
                r.sql.push_str(&change);
                r.sql.push_str(") <= julianday('now') - ");
                r.bind(BindValue::Float(lag.as_secs_f64() / 86_400.0));
            }
            Dialect::Postgres => {
                r.sql.push_str(&change);
                r.sql.push_str(match horizon {
                    Horizon::Zoned(_) => " <= CURRENT_TIMESTAMP",
                    Horizon::Local(_) => " <= LOCALTIMESTAMP",
                });
                r.sql.push_str(" - make_interval(secs => CAST(");
                r.bind(BindValue::Float(lag.as_secs_f64()));
                r.sql.push_str(" AS double precision))");
            }
            Dialect::MySql => {
                r.sql.push_str(&change);
                r.sql.push_str(" <= NOW(6) - INTERVAL ");
                r.bind(BindValue::Int(
                    i64::try_from(lag.as_micros()).unwrap_or(i64::MAX),
                ));
                r.sql.push_str(" MICROSECOND");
            }
        }
    }
    r.sql.push_str(" ORDER BY ");
    r.sql.push_str(&change);
    r.sql.push_str(", ");
    r.sql.push_str(&key);
    r.sql.push_str(" LIMIT ");
    r.bind(BindValue::Int(i64::try_from(s.limit).unwrap_or(i64::MAX)));
    Rendered {
        sql: r.sql,
        binds: r.binds,
    }
}

/// Which rows a read of current rows takes.
#[derive(Debug)]
pub(crate) enum CurrentRows {
    /// Rows in key order after a key (from the first when `None`), at
    /// most `limit`: a page of a snapshot.
    After(Option<BindValue>, u64),
    /// The rows with these keys, in no order.
    Keys(Vec<BindValue>),
}

/// A read of a table's current rows for a logical replication source:
/// each row's key, whether it is in scope, and its record.
#[derive(Debug)]
pub(crate) struct CurrentSelect<'a> {
    pub(crate) schema: Option<&'a str>,
    pub(crate) table: &'a str,
    pub(crate) key: &'a ColRef,
    pub(crate) columns: &'a [ColRef],
    pub(crate) scope: &'a [&'a Cond],
    pub(crate) rows: CurrentRows,
}

/// Renders a read of current rows with the result columns of a change
/// poll ([`render_changes`]), so one reader reads both: the key twice (in
/// the place of the change value, then as the key), `0` (a row that
/// exists is not deleted), `1` when it is in scope (else `0`), then
/// `columns`.
pub(crate) fn render_current(dialect: Dialect, s: &CurrentSelect<'_>) -> Rendered {
    let mut r = Renderer {
        dialect,
        sql: String::from("SELECT "),
        binds: Vec::new(),
    };
    let key = s.key.render(dialect);
    r.sql.push_str(&key);
    r.sql.push_str(", ");
    r.sql.push_str(&key);
    r.sql.push_str(", 0, ");
    r.scope_flag_columns_from(s.scope, s.columns, s.schema, s.table);
    match &s.rows {
        CurrentRows::After(after, limit) => {
            if let Some(after) = after {
                r.sql.push_str(" WHERE ");
                r.sql.push_str(&key);
                r.sql.push_str(" > ");
                r.bind(after.clone());
            }
            r.sql.push_str(" ORDER BY ");
            r.sql.push_str(&key);
            r.sql.push_str(" LIMIT ");
            r.bind(BindValue::Int(i64::try_from(*limit).unwrap_or(i64::MAX)));
        }
        CurrentRows::Keys(keys) => {
            r.sql.push_str(" WHERE ");
            r.sql.push_str(&key);
            r.sql.push_str(" IN (");
            if keys.is_empty() {
                r.sql.push_str("NULL");
            }
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    r.sql.push_str(", ");
                }
                r.bind(k.clone());
            }
            r.sql.push(')');
        }
    }
    Rendered {
        sql: r.sql,
        binds: r.binds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str) -> ColRef {
        ColRef {
            name: name.into(),
            cast_to_text: false,
        }
    }

    fn eq(name: &str, v: BindValue) -> Cond {
        Cond::Cmp {
            col: col(name),
            op: CmpOp::Eq,
            value: v,
        }
    }

    #[test]
    fn identifiers_are_quoted_with_quote_chars_doubled() {
        let cases = [
            (Dialect::Sqlite, "nik", "\"nik\""),
            (Dialect::Postgres, "a\"b", "\"a\"\"b\""),
            (
                Dialect::Postgres,
                "x\"; DROP TABLE t; --",
                "\"x\"\"; DROP TABLE t; --\"",
            ),
            (Dialect::MySql, "a`b", "`a``b`"),
            (Dialect::MySql, "a\"b", "`a\"b`"),
            (Dialect::Sqlite, "a`b", "\"a`b\""),
        ];
        for (d, name, want) in cases {
            assert_eq!(d.quote_ident(name), want, "{d:?} {name}");
        }
    }

    #[test]
    fn like_escaping_makes_wildcards_literal() {
        let cases = [
            ("abc", "abc"),
            ("50%", "50\\%"),
            ("a_b", "a\\_b"),
            ("c:\\x", "c:\\\\x"),
            ("%_\\", "\\%\\_\\\\"),
            ("é'", "é'"),
        ];
        for (input, want) in cases {
            assert_eq!(escape_like(input), want, "{input}");
        }
    }

    fn full_query(d: Dialect) -> Rendered {
        let cols = [
            col("nik"),
            col("na\"me`"),
            ColRef {
                name: "agama".into(),
                cast_to_text: true,
            },
        ];
        let row_filter = eq("status", BindValue::Text("HIDUP".into()));
        let filter = Cond::All(vec![
            Cond::In {
                col: col("kec"),
                values: vec![BindValue::Int(1), BindValue::Int(2)],
            },
            Cond::Not(Box::new(Cond::Prefix {
                col: col("nama"),
                prefix: "A_%".into(),
            })),
            Cond::Any(vec![]),
            Cond::All(vec![]),
            Cond::IsNull(col("x")),
        ]);
        render(
            d,
            &Select {
                schema: Some("si\"ak"),
                table: "pen`duduk",
                columns: &cols,
                row_filter: Some(&row_filter),
                filter: Some(&filter),
                order_by: Some("nik"),
                limit: Some(10),
            },
        )
    }

    #[test]
    fn dialects_render_placeholders_and_quotes() {
        let pg = full_query(Dialect::Postgres);
        assert_eq!(
            pg.sql,
            "SELECT \"nik\", \"na\"\"me`\", CAST(\"agama\" AS TEXT) AS \"agama\" \
             FROM \"si\"\"ak\".\"pen`duduk\" WHERE (\"status\" = $1) AND \
             ((\"kec\" IN ($2, $3) AND NOT (\"nama\" LIKE $4 ESCAPE '\\') AND 1=0 AND 1=1 \
             AND \"x\" IS NULL)) ORDER BY \"nik\" LIMIT $5"
        );
        assert_eq!(
            pg.binds,
            vec![
                BindValue::Text("HIDUP".into()),
                BindValue::Int(1),
                BindValue::Int(2),
                BindValue::Text("A\\_\\%%".into()),
                BindValue::Int(10),
            ]
        );
        let my = full_query(Dialect::MySql);
        assert_eq!(
            my.sql,
            "SELECT `nik`, `na\"me```, CAST(`agama` AS CHAR) AS `agama` \
             FROM `si\"ak`.`pen``duduk` WHERE (`status` = ?) AND \
             ((`kec` IN (?, ?) AND NOT (`nama` LIKE ? ESCAPE '\\\\') AND 1=0 AND 1=1 \
             AND `x` IS NULL)) ORDER BY `nik` LIMIT ?"
        );
        assert_eq!(my.binds, pg.binds);
        let lite = full_query(Dialect::Sqlite);
        assert_eq!(
            lite.sql,
            "SELECT \"nik\", \"na\"\"me`\", \"agama\" \
             FROM \"si\"\"ak\".\"pen`duduk\" WHERE (\"status\" = ?) AND \
             ((\"kec\" IN (?, ?) AND NOT (\"nama\" LIKE ? ESCAPE '\\') AND 1=0 AND 1=1 \
             AND \"x\" IS NULL)) ORDER BY \"nik\" LIMIT ?"
        );
    }

    #[test]
    fn minimal_select_has_no_where_order_or_limit() {
        let cols = [col("a")];
        let r = render(
            Dialect::Postgres,
            &Select {
                schema: None,
                table: "t",
                columns: &cols,
                row_filter: None,
                filter: None,
                order_by: None,
                limit: None,
            },
        );
        assert_eq!(r.sql, "SELECT \"a\" FROM \"t\"");
        assert!(r.binds.is_empty());
    }

    #[test]
    fn request_filter_alone_and_ne_and_any() {
        let cols = [col("a")];
        let f = Cond::Any(vec![
            Cond::Cmp {
                col: col("a"),
                op: CmpOp::Ne,
                value: BindValue::Int(1),
            },
            Cond::Cmp {
                col: col("a"),
                op: CmpOp::Ge,
                value: BindValue::Int(5),
            },
            Cond::IsNotNull(col("b")),
        ]);
        let r = render(
            Dialect::Postgres,
            &Select {
                schema: None,
                table: "t",
                columns: &cols,
                row_filter: None,
                filter: Some(&f),
                order_by: None,
                limit: Some(u64::MAX),
            },
        );
        assert_eq!(
            r.sql,
            "SELECT \"a\" FROM \"t\" WHERE ((\"a\" <> $1 OR \"a\" >= $2 OR \"b\" IS NOT NULL)) LIMIT $3"
        );
        assert_eq!(r.binds[2], BindValue::Int(i64::MAX));
    }

    #[test]
    fn current_rows_render_as_a_change_poll_reads_them() {
        let key = col("nik");
        let cols = [col("nama")];
        let row_filter = eq("kec", BindValue::Int(1));
        let scope = [&row_filter];
        let select = |rows| CurrentSelect {
            schema: Some("siak"),
            table: "penduduk",
            key: &key,
            columns: &cols,
            scope: &scope,
            rows,
        };
        let page = render_current(
            Dialect::Postgres,
            &select(CurrentRows::After(Some(BindValue::Text("3201".into())), 50)),
        );
        assert_eq!(
            page.sql,
            "SELECT \"nik\", \"nik\", 0, CASE WHEN (\"kec\" = $1) THEN 1 ELSE 0 END, \"nama\" \
             FROM \"siak\".\"penduduk\" WHERE \"nik\" > $2 ORDER BY \"nik\" LIMIT $3"
        );
        assert_eq!(
            page.binds,
            vec![
                BindValue::Int(1),
                BindValue::Text("3201".into()),
                BindValue::Int(50)
            ]
        );
        let first = render_current(Dialect::Postgres, &select(CurrentRows::After(None, 50)));
        assert!(
            first
                .sql
                .ends_with("FROM \"siak\".\"penduduk\" ORDER BY \"nik\" LIMIT $2")
        );
        let keys = render_current(
            Dialect::Postgres,
            &select(CurrentRows::Keys(vec![
                BindValue::Text("a".into()),
                BindValue::Text("b".into()),
            ])),
        );
        assert!(
            keys.sql.ends_with("WHERE \"nik\" IN ($2, $3)"),
            "{}",
            keys.sql
        );
        let none = render_current(Dialect::Postgres, &select(CurrentRows::Keys(vec![])));
        assert!(none.sql.ends_with("WHERE \"nik\" IN (NULL)"));
    }

    #[test]
    fn change_polls_render_keyset_order_scope_and_horizon() {
        let change = col("diubah");
        let key = col("nik");
        let cols = [col("nik"), col("nama")];
        let deleted = eq("status", BindValue::Text("DIHAPUS".into()));
        let row_filter = eq("kec", BindValue::Int(1));
        let filter = Cond::IsNotNull(col("nama"));
        let scope = [&row_filter, &filter];
        let select = |after, horizon| ChangeSelect {
            schema: None,
            table: "pen\"duduk",
            change: &change,
            key: &key,
            columns: &cols,
            deleted: Some(&deleted),
            scope: &scope,
            after,
            horizon,
            limit: 100,
        };
        let pg = render_changes(
            Dialect::Postgres,
            &select(
                Some((BindValue::Int(7), BindValue::Text("3201".into()))),
                Some(Horizon::Zoned(std::time::Duration::from_millis(1500))),
            ),
        );
        assert_eq!(
            pg.sql,
            "SELECT \"diubah\", \"nik\", CASE WHEN (\"status\" = $1) THEN 1 ELSE 0 END, \
             CASE WHEN (\"kec\" = $2) AND (\"nama\" IS NOT NULL) THEN 1 ELSE 0 END, \
             \"nik\", \"nama\" FROM \"pen\"\"duduk\" WHERE \"diubah\" IS NOT NULL \
             AND \"diubah\" >= $3 AND (\"diubah\" > $4 OR (\"diubah\" = $5 AND \"nik\" > $6)) \
             AND \"diubah\" <= CURRENT_TIMESTAMP - make_interval(secs => CAST($7 AS double precision)) \
             ORDER BY \"diubah\", \"nik\" LIMIT $8"
        );
        assert_eq!(
            pg.binds,
            vec![
                BindValue::Text("DIHAPUS".into()),
                BindValue::Int(1),
                BindValue::Int(7),
                BindValue::Int(7),
                BindValue::Int(7),
                BindValue::Text("3201".into()),
                BindValue::Float(1.5),
                BindValue::Int(100),
            ]
        );
        let my = render_changes(
            Dialect::MySql,
            &select(
                None,
                Some(Horizon::Local(std::time::Duration::from_millis(2))),
            ),
        );
        assert!(
            my.sql.ends_with(
                "FROM `pen\"duduk` WHERE `diubah` IS NOT NULL \
                 AND `diubah` <= NOW(6) - INTERVAL ? MICROSECOND ORDER BY `diubah`, `nik` LIMIT ?"
            ),
            "{}",
            my.sql
        );
        assert_eq!(my.binds[2], BindValue::Int(2000));
        let lite = render_changes(Dialect::Sqlite, &select(None, None));
        assert!(
            lite.sql
                .ends_with("WHERE \"diubah\" IS NOT NULL ORDER BY \"diubah\", \"nik\" LIMIT ?"),
            "{}",
            lite.sql
        );
        let unscoped = ChangeSelect {
            deleted: None,
            scope: &[],
            ..select(None, Some(Horizon::Zoned(std::time::Duration::ZERO)))
        };
        let lite = render_changes(Dialect::Sqlite, &unscoped);
        assert!(
            lite.sql.starts_with(
                "SELECT \"diubah\", \"nik\", CASE WHEN 1=0 THEN 1 ELSE 0 END, \
                 CASE WHEN 1=1 THEN 1 ELSE 0 END, \"nik\", \"nama\""
            ),
            "{}",
            lite.sql
        );
        assert!(
            lite.sql
                .contains("AND julianday(\"diubah\") <= julianday('now') - ? ORDER BY"),
            "{}",
            lite.sql
        );
    }
}
