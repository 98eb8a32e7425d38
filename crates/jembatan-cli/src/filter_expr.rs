//! The filter expressions of `jembatan query`: a small language read into
//! the structured [`Filter`] (and from there the proto `Filter`), never
//! into SQL.
//!
//! ```text
//! expr      := or
//! or        := and ("or" and)*
//! and       := unary ("and" unary)*
//! unary     := "not" unary | "(" expr ")" | predicate
//! predicate := FIELD ("=" | "!=" | "<>" | "<" | "<=" | ">" | ">=") value
//!            | FIELD ["not"] "in" "(" value ("," value)* ")"
//!            | FIELD "is" ["not"] "null"
//!            | FIELD "starts" "with" STRING
//! value     := STRING ('single quoted', '' for a quote) | NUMBER | true | false
//! ```
//!
//! Keywords are case-insensitive. An error names the column (from 1, in
//! characters) where the expression went wrong.

use std::fmt;

use jembatan_core::{FieldName, Filter, Operator, Predicate, Scalar};

/// Why an expression could not be read, and where.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExprError {
    /// Column of the fault, from 1, counted in characters.
    pub(crate) column: usize,
    pub(crate) message: String,
}

impl fmt::Display for ExprError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for ExprError {}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(Scalar),
    Op(&'static str),
    Open,
    Close,
    Comma,
    End,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Str(s) => format!("the string '{s}'"),
            Tok::Num(n) => format!("the number {}", n.describe()),
            Tok::Op(o) => format!("`{o}`"),
            Tok::Open => "`(`".into(),
            Tok::Close => "`)`".into(),
            Tok::Comma => "`,`".into(),
            Tok::End => "the end of the expression".into(),
        }
    }
}

fn err(column: usize, message: impl Into<String>) -> ExprError {
    ExprError {
        column,
        message: message.into(),
    }
}

/// Splits the text into tokens, each with its column.
fn lex(text: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let col = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let (tok, len) = match c {
            '(' => (Tok::Open, 1),
            ')' => (Tok::Close, 1),
            ',' => (Tok::Comma, 1),
            _ if two == "<=" => (Tok::Op("<="), 2),
            _ if two == ">=" => (Tok::Op(">="), 2),
            _ if two == "!=" || two == "<>" => (Tok::Op("!="), 2),
            _ if two == "==" => (Tok::Op("="), 2),
            '=' => (Tok::Op("="), 1),
            '<' => (Tok::Op("<"), 1),
            '>' => (Tok::Op(">"), 1),
            '\'' => {
                let mut s = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err(err(col, "this string is not closed with '")),
                        Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                            s.push('\'');
                            j += 2;
                        }
                        Some('\'') => break,
                        Some(&ch) => {
                            s.push(ch);
                            j += 1;
                        }
                    }
                }
                (Tok::Str(s), j + 1 - i)
            }
            '"' => {
                return Err(err(
                    col,
                    "strings are written in single quotes: 'like this'",
                ));
            }
            _ if c.is_ascii_digit() || c == '-' || c == '+' => {
                let mut j = i + 1;
                while j < chars.len()
                    && (chars[j].is_ascii_alphanumeric() || matches!(chars[j], '.' | '_'))
                {
                    // an exponent's sign belongs to the number
                    j += 1;
                    if matches!(chars[j - 1], 'e' | 'E') && matches!(chars.get(j), Some('-' | '+'))
                    {
                        j += 1;
                    }
                }
                let word: String = chars[i..j].iter().collect();
                (Tok::Num(number(&word, col)?), j - i)
            }
            _ if c.is_alphabetic() || c == '_' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                (Tok::Word(chars[i..j].iter().collect()), j - i)
            }
            _ => return Err(err(col, format!("unexpected character {c:?}"))),
        };
        out.push((tok, col));
        i += len;
    }
    out.push((Tok::End, chars.len() + 1));
    Ok(out)
}

fn number(word: &str, col: usize) -> Result<Scalar, ExprError> {
    if let Ok(i) = word.parse::<i64>() {
        return Ok(Scalar::Int(i));
    }
    let digits = word.trim_start_matches(['-', '+']);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(
            col,
            format!("{word} does not fit in a 64-bit integer; quote it to send it as a string"),
        ));
    }
    match word.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(Scalar::Float(f)),
        _ => Err(err(col, format!("{word:?} is not a number"))),
    }
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> &(Tok, usize) {
        // the list always ends with `End`, which is never consumed
        &self.toks[self.at.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> (Tok, usize) {
        let t = self.peek().clone();
        if t.0 != Tok::End {
            self.at += 1;
        }
        t
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(&self.peek().0, Tok::Word(w) if w.eq_ignore_ascii_case(word))
    }

    fn expect_keyword(&mut self, word: &str) -> Result<(), ExprError> {
        if self.keyword(word) {
            self.next();
            Ok(())
        } else {
            let (t, col) = self.peek();
            Err(err(
                *col,
                format!("expected `{word}`, found {}", t.describe()),
            ))
        }
    }

    fn or(&mut self) -> Result<Filter, ExprError> {
        let mut list = vec![self.and()?];
        while self.keyword("or") {
            self.next();
            list.push(self.and()?);
        }
        Ok(if list.len() == 1 {
            list.remove(0)
        } else {
            Filter::Any(list)
        })
    }

    fn and(&mut self) -> Result<Filter, ExprError> {
        let mut list = vec![self.unary()?];
        while self.keyword("and") {
            self.next();
            list.push(self.unary()?);
        }
        Ok(if list.len() == 1 {
            list.remove(0)
        } else {
            Filter::All(list)
        })
    }

    fn unary(&mut self) -> Result<Filter, ExprError> {
        if self.keyword("not") {
            self.next();
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        if self.peek().0 == Tok::Open {
            let (_, open) = self.next();
            let inner = self.or()?;
            return match self.next() {
                (Tok::Close, _) => Ok(inner),
                (t, col) => Err(err(
                    col,
                    format!(
                        "expected `)` closing the `(` at column {open}, found {}",
                        t.describe()
                    ),
                )),
            };
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Filter, ExprError> {
        let (tok, col) = self.next();
        let name = match tok {
            Tok::Word(w)
                if !["and", "or", "not", "in", "is"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k)) =>
            {
                w
            }
            t => {
                return Err(err(
                    col,
                    format!("expected a field name, found {}", t.describe()),
                ));
            }
        };
        let field: FieldName = name
            .parse()
            .map_err(|e: jembatan_core::InvalidArgument| err(col, e.to_string()))?;
        let build = |op, value, values| {
            Predicate::new(field.clone(), op, value, values)
                .map(Filter::Predicate)
                .map_err(|e| err(col, e.to_string()))
        };
        let (tok, op_col) = self.next();
        match tok {
            Tok::Op(op) => {
                let op = match op {
                    "=" => Operator::Eq,
                    "!=" => Operator::Ne,
                    "<" => Operator::Lt,
                    "<=" => Operator::Le,
                    ">" => Operator::Gt,
                    _ => Operator::Ge,
                };
                let value = self.value()?;
                build(op, Some(value), Vec::new())
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("is") => {
                let negated = self.keyword("not");
                if negated {
                    self.next();
                }
                self.expect_keyword("null")?;
                let op = if negated {
                    Operator::IsNotNull
                } else {
                    Operator::IsNull
                };
                build(op, None, Vec::new())
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("in") => {
                let values = self.list()?;
                build(Operator::In, None, values)
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("not") => {
                self.expect_keyword("in")?;
                let values = self.list()?;
                Ok(Filter::Not(Box::new(build(Operator::In, None, values)?)))
            }
            Tok::Word(w) if w.eq_ignore_ascii_case("starts") => {
                self.expect_keyword("with")?;
                let (tok, col) = self.peek().clone();
                match tok {
                    Tok::Str(_) => {}
                    t => {
                        return Err(err(
                            col,
                            format!("starts with needs a string, found {}", t.describe()),
                        ));
                    }
                }
                let value = self.value()?;
                build(Operator::Prefix, Some(value), Vec::new())
            }
            t => Err(err(
                op_col,
                format!(
                    "expected an operator (=, !=, <, <=, >, >=, in, not in, is null, is not null, starts with) after `{name}`, found {}",
                    t.describe()
                ),
            )),
        }
    }

    fn list(&mut self) -> Result<Vec<Scalar>, ExprError> {
        match self.next() {
            (Tok::Open, _) => {}
            (t, col) => {
                return Err(err(
                    col,
                    format!("expected `(` after in, found {}", t.describe()),
                ));
            }
        }
        let mut values = vec![self.value()?];
        loop {
            match self.next() {
                (Tok::Comma, _) => values.push(self.value()?),
                (Tok::Close, _) => return Ok(values),
                (t, col) => {
                    return Err(err(
                        col,
                        format!("expected `,` or `)` in the list, found {}", t.describe()),
                    ));
                }
            }
        }
    }

    fn value(&mut self) -> Result<Scalar, ExprError> {
        let (tok, col) = self.next();
        let value = match tok {
            Tok::Str(s) => Scalar::String(s),
            Tok::Num(n) => n,
            Tok::Word(w) if w.eq_ignore_ascii_case("true") => Scalar::Bool(true),
            Tok::Word(w) if w.eq_ignore_ascii_case("false") => Scalar::Bool(false),
            Tok::Word(w) if w.eq_ignore_ascii_case("null") => {
                return Err(err(
                    col,
                    "compare with null using `is null` or `is not null`",
                ));
            }
            Tok::Word(w) => {
                return Err(err(
                    col,
                    format!("expected a value, found `{w}` (quote strings: '{w}')"),
                ));
            }
            t => {
                return Err(err(
                    col,
                    format!("expected a value, found {}", t.describe()),
                ));
            }
        };
        value.validate().map_err(|e| err(col, e.to_string()))?;
        Ok(value)
    }
}

/// Reads a filter expression. The result is checked against the same
/// depth and size limits the broker applies.
pub(crate) fn parse(text: &str) -> Result<Filter, ExprError> {
    let mut parser = Parser {
        toks: lex(text)?,
        at: 0,
    };
    if parser.peek().0 == Tok::End {
        return Err(err(1, "the filter expression is empty"));
    }
    let filter = parser.or()?;
    let (tok, col) = parser.peek().clone();
    if tok != Tok::End {
        return Err(err(
            col,
            format!(
                "expected `and`, `or` or the end of the expression, found {}",
                tok.describe()
            ),
        ));
    }
    filter.validate().map_err(|e| err(1, e.to_string()))?;
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Valid expressions and the filter each reads as, in the JSON form
    /// agreements use.
    #[test]
    fn valid_expressions() {
        let cases: &[(&str, &str, serde_json::Value)] = &[
            (
                "equality",
                "kode_kecamatan = '15.07.07'",
                serde_json::json!({"field": "kode_kecamatan", "op": "eq", "value": "15.07.07"}),
            ),
            (
                "and of two",
                "kode_kecamatan = '15.07.07' and tgl_lahir >= '1990-01-01'",
                serde_json::json!({"all": [
                    {"field": "kode_kecamatan", "op": "eq", "value": "15.07.07"},
                    {"field": "tgl_lahir", "op": "ge", "value": "1990-01-01"},
                ]}),
            ),
            (
                "and binds tighter than or",
                "a = 1 or b = 2 and c = 3",
                serde_json::json!({"any": [
                    {"field": "a", "op": "eq", "value": 1},
                    {"all": [
                        {"field": "b", "op": "eq", "value": 2},
                        {"field": "c", "op": "eq", "value": 3},
                    ]},
                ]}),
            ),
            (
                "parentheses and not",
                "NOT (a <> 1 OR b < -2.5)",
                serde_json::json!({"not": {"any": [
                    {"field": "a", "op": "ne", "value": 1},
                    {"field": "b", "op": "lt", "value": -2.5},
                ]}}),
            ),
            (
                "in with mixed values",
                "status in ('HIDUP', 'PINDAH')",
                serde_json::json!({"field": "status", "op": "in", "values": ["HIDUP", "PINDAH"]}),
            ),
            (
                "not in",
                "kode not in (1, 2)",
                serde_json::json!({"not": {"field": "kode", "op": "in", "values": [1, 2]}}),
            ),
            (
                "null tests",
                "a is null and b IS NOT NULL",
                serde_json::json!({"all": [
                    {"field": "a", "op": "is_null"},
                    {"field": "b", "op": "is_not_null"},
                ]}),
            ),
            (
                "booleans, comparisons",
                "aktif = true and umur > 17 and umur <= 60 and x != false",
                serde_json::json!({"all": [
                    {"field": "aktif", "op": "eq", "value": true},
                    {"field": "umur", "op": "gt", "value": 17},
                    {"field": "umur", "op": "le", "value": 60},
                    {"field": "x", "op": "ne", "value": false},
                ]}),
            ),
            (
                "quote inside a string, prefix",
                "nama starts with 'O''BRIEN'",
                serde_json::json!({"field": "nama", "op": "prefix", "value": "O'BRIEN"}),
            ),
            (
                "a 16-digit key stays an integer",
                "nik_num = 3507123412340001",
                serde_json::json!({"field": "nik_num", "op": "eq", "value": 3507123412340001_i64}),
            ),
            (
                "no spaces needed",
                "(a>=1)and(b=='x')",
                serde_json::json!({"all": [
                    {"field": "a", "op": "ge", "value": 1},
                    {"field": "b", "op": "eq", "value": "x"},
                ]}),
            ),
        ];
        for (name, text, want) in cases {
            let filter = parse(text).unwrap_or_else(|e| panic!("{name}: {text}: {e}"));
            let got = serde_json::to_value(&filter).unwrap();
            assert_eq!(&got, want, "{name}: {text}");
            // and it survives the trip through the proto
            let back = Filter::try_from(&filter.to_proto()).unwrap();
            assert_eq!(back, filter, "{name}");
        }
    }

    /// Invalid expressions, with the column the error must point at.
    #[test]
    fn invalid_expressions() {
        let cases: &[(&str, &str, usize, &str)] = &[
            ("empty", "   ", 1, "empty"),
            ("no operator", "kode '1'", 6, "expected an operator"),
            ("no value", "kode = ", 8, "expected a value"),
            ("unquoted string", "kode = abc", 8, "quote strings"),
            ("double quotes", "kode = \"abc\"", 8, "single quotes"),
            ("unclosed string", "a = 1 and kode = 'abc", 18, "not closed"),
            (
                "unclosed parenthesis",
                "(a = 1 or b = 2",
                16,
                "closing the `(` at column 1",
            ),
            ("dangling and", "a = 1 and", 10, "expected a field name"),
            ("two predicates", "a = 1 b = 2", 7, "expected `and`, `or`"),
            ("bad character", "a = 1 ; drop", 7, "unexpected character"),
            ("bad field name", "1a = 2", 1, "is not a number"),
            ("field with a dot", "t.a = 2", 2, "unexpected character"),
            ("compare with null", "a = null", 5, "is null"),
            ("is without null", "a is 1", 6, "expected `null`"),
            ("empty in list", "a in ()", 7, "expected a value"),
            ("in without list", "a in 1", 6, "expected `(`"),
            (
                "in list not closed",
                "a in (1, 2",
                11,
                "expected `,` or `)`",
            ),
            (
                "starts with a number",
                "a starts with 1",
                15,
                "needs a string",
            ),
            (
                "too big an integer",
                "a = 99999999999999999999",
                5,
                "64-bit",
            ),
            ("keyword as field", "and = 1", 1, "expected a field name"),
            ("stray close", "a = 1)", 6, "expected `and`, `or`"),
        ];
        for (name, text, column, needle) in cases {
            let e = parse(text).expect_err(name);
            assert_eq!(e.column, *column, "{name}: {text}: {e}");
            assert!(e.message.contains(needle), "{name}: {text}: {e}");
        }
    }

    #[test]
    fn limits_apply() {
        let deep = format!("{}a = 1{}", "not (".repeat(40), ")".repeat(40));
        let e = parse(&deep).expect_err("too deep");
        assert!(e.message.contains("max_filter_depth"), "{e}");
    }

    /// Writes a filter back as an expression (each compound in
    /// parentheses), for the round-trip property.
    fn render(f: &Filter) -> String {
        fn value(v: &Scalar) -> String {
            match v {
                Scalar::String(s) => format!("'{}'", s.replace('\'', "''")),
                Scalar::Int(i) => i.to_string(),
                Scalar::Float(x) => format!("{x:?}"),
                Scalar::Bool(b) => b.to_string(),
            }
        }
        let join = |list: &[Filter], sep: &str| {
            let parts: Vec<String> = list.iter().map(render).collect();
            format!("({})", parts.join(sep))
        };
        match f {
            Filter::All(list) => join(list, " and "),
            Filter::Any(list) => join(list, " or "),
            Filter::Not(inner) => format!("not {}", render(inner)),
            Filter::Predicate(p) => {
                let field = p.field.as_str();
                let one = || p.value.as_ref().map(value).unwrap_or_default();
                match p.op {
                    Operator::Eq => format!("{field} = {}", one()),
                    Operator::Ne => format!("{field} != {}", one()),
                    Operator::Lt => format!("{field} < {}", one()),
                    Operator::Le => format!("{field} <= {}", one()),
                    Operator::Gt => format!("{field} > {}", one()),
                    Operator::Ge => format!("{field} >= {}", one()),
                    Operator::Prefix => format!("{field} starts with {}", one()),
                    Operator::IsNull => format!("{field} is null"),
                    Operator::IsNotNull => format!("{field} is not null"),
                    Operator::In => {
                        let vs: Vec<String> = p.values.iter().map(value).collect();
                        format!("{field} in ({})", vs.join(", "))
                    }
                }
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn field() -> impl Strategy<Value = FieldName> {
            "[a-z_][a-z0-9_]{0,8}"
                .prop_filter("not a keyword", |f| {
                    !["and", "or", "not", "in", "is"].contains(&f.as_str())
                })
                .prop_map(|f| f.parse().expect("a valid name"))
        }

        fn scalar() -> impl Strategy<Value = Scalar> {
            prop_oneof![
                "[^\\x00]{0,12}".prop_map(Scalar::String),
                any::<i64>().prop_map(Scalar::Int),
                (-1e12f64..1e12).prop_map(Scalar::Float),
                any::<bool>().prop_map(Scalar::Bool),
            ]
        }

        fn predicate() -> impl Strategy<Value = Filter> {
            let compare = prop_oneof![
                Just(Operator::Eq),
                Just(Operator::Ne),
                Just(Operator::Lt),
                Just(Operator::Le),
                Just(Operator::Gt),
                Just(Operator::Ge),
            ];
            prop_oneof![
                (field(), compare, scalar()).prop_map(|(f, op, v)| Predicate::new(
                    f,
                    op,
                    Some(v),
                    Vec::new()
                )),
                (field(), proptest::collection::vec(scalar(), 1..4))
                    .prop_map(|(f, vs)| Predicate::new(f, Operator::In, None, vs)),
                (field(), any::<bool>()).prop_map(|(f, not)| {
                    let op = if not {
                        Operator::IsNotNull
                    } else {
                        Operator::IsNull
                    };
                    Predicate::new(f, op, None, Vec::new())
                }),
                (field(), "[^\\x00]{0,12}").prop_map(|(f, s)| {
                    Predicate::new(f, Operator::Prefix, Some(Scalar::String(s)), Vec::new())
                }),
            ]
            .prop_map(|p| Filter::Predicate(p.expect("a valid predicate")))
        }

        fn filter() -> impl Strategy<Value = Filter> {
            predicate().prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 2..4).prop_map(Filter::All),
                    proptest::collection::vec(inner.clone(), 2..4).prop_map(Filter::Any),
                    inner.prop_map(|f| Filter::Not(Box::new(f))),
                ]
            })
        }

        proptest! {
            /// Any filter, written as an expression, reads back the same.
            #[test]
            fn rendered_filters_read_back(f in filter()) {
                let text = render(&f);
                let back = parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
                prop_assert_eq!(back, f, "{}", text);
            }

            /// Any text either reads or fails at a column inside it (or
            /// just past its end); never a panic.
            #[test]
            fn any_text_fails_at_a_column_inside_it(text in "\\PC{0,40}") {
                if let Err(e) = parse(&text) {
                    prop_assert!(e.column >= 1 && e.column <= text.chars().count() + 1, "{}: {}", text, e);
                }
            }
        }
    }
}
