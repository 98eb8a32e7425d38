//! Type-checking: each kind of error names its rule and path.

use jembatan_mapping::{CheckError, Format, Mapping};
use serde_json::{Value, json};

fn source() -> Value {
    json!({
        "type": "object",
        "properties": {
            "nik": {"type": "string"},
            "nama": {"type": "string"},
            "tempat": {"type": ["string", "null"]},
            "tgl": {"type": "string"},
            "jk": {"type": "string", "enum": ["L", "P"]},
            "umur": {"type": "integer"},
            "kode": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}}
        },
        "required": ["nik", "nama", "tgl", "jk", "umur", "kode"]
    })
}

fn target() -> Value {
    json!({
        "type": "object",
        "$defs": {"code": {"type": "string", "pattern": "^[0-9]+$"}},
        "properties": {
            "nik": {"type": "string"},
            "name": {"type": "string"},
            "place": {"type": "string"},
            "birth_date": {"type": "string", "format": "date"},
            "sex": {"enum": ["M", "F"]},
            "age": {"type": "integer"},
            "code": {"$ref": "#/$defs/code"},
            "kind": {"const": "resident"},
            "address": {
                "type": "object",
                "properties": {"rt": {"type": "string"}, "rw": {"type": "string"}},
                "required": ["rt"],
                "additionalProperties": false
            },
            "labels": {"type": "array", "items": {"type": "integer"}}
        },
        "required": ["nik", "name"],
        "additionalProperties": false
    })
}

const OK_RULES: &str =
    "[[rule]]\ntarget = \"nik\"\nfrom = \"nik\"\n[[rule]]\ntarget = \"name\"\nfrom = \"nama\"\n";

fn check(rules: &str) -> Result<(), Vec<CheckError>> {
    let text = format!(
        "version = 1\nsource = \"a.src@1\"\ntarget = \"b.dst@1\"\nsecrets = [\"pseudonym\"]\n{rules}"
    );
    let m = Mapping::parse(&text, Format::Toml).unwrap_or_else(|e| panic!("{e}"));
    m.check(&source(), &target()).map(|_| ())
}

#[test]
fn a_well_typed_mapping_passes() {
    let rules = format!(
        "{OK_RULES}
[[rule]]
target = \"place\"
from = \"tempat\"
default = \"-\"
[[rule]]
target = \"birth_date\"
from = \"tgl\"
ops = [{{ date = {{ parse = \"%d-%m-%Y\", format = \"%Y-%m-%d\" }} }}]
[[rule]]
target = \"sex\"
from = \"jk\"
ops = [{{ value_map = {{ map = {{ L = \"M\", P = \"F\" }} }} }}]
[[rule]]
target = \"age\"
from = \"umur\"
[[rule]]
target = \"kind\"
const = \"resident\"
[[rule]]
target = \"address.rt\"
from = \"kode\"
[[rule]]
target = \"labels\"
from = \"tags\"
ops = [{{ each = [{{ cast = \"integer\" }}] }}]
[[rule]]
target = \"code\"
from = \"nik\"
ops = [{{ hash = {{ secret = \"pseudonym\" }} }}]
"
    );
    check(&rules).unwrap_or_else(|e| panic!("{e:#?}"));
}

#[test]
fn errors_name_rule_and_path() {
    // (name, extra rules, rule index, path, message fragment)
    let cases: &[(&str, &str, Option<usize>, &str, &str)] = &[
        (
            "nonexistent source path",
            "[[rule]]\ntarget = \"birth_date\"\nfrom = \"tgl_lahr\"",
            Some(2),
            "tgl_lahr",
            "rule 2 (birth_date): source path \"tgl_lahr\" does not exist in a.src@1",
        ),
        (
            "nonexistent nested source path",
            "[[rule]]\ntarget = \"place\"\nfrom = \"nama.x\"",
            Some(2),
            "nama.x",
            "does not exist in a.src@1",
        ),
        (
            "condition on a nonexistent field",
            "[[rule]]\nwhen = { field = \"stat\", op = \"is_null\" }\nfail = \"x\"",
            Some(2),
            "stat",
            "rule 2 (fail): source path \"stat\" does not exist",
        ),
        (
            "type mismatch",
            "[[rule]]\ntarget = \"age\"\nfrom = \"nama\"",
            Some(2),
            "age",
            "the value is string but \"age\" in b.dst@1 is integer; add a cast",
        ),
        (
            "cast fixes the type",
            "[[rule]]\ntarget = \"age\"\nfrom = \"nama\"\nops = [{ cast = \"integer\" }]",
            None,
            "",
            "",
        ),
        (
            "nullable into non-nullable",
            "[[rule]]\ntarget = \"place\"\nfrom = \"tempat\"",
            Some(2),
            "place",
            "may be null but \"place\" in b.dst@1 is not nullable; add a default",
        ),
        (
            "date format needed",
            "[[rule]]\ntarget = \"birth_date\"\nfrom = \"tgl\"",
            Some(2),
            "birth_date",
            "has format \"date\" but the value is an arbitrary string",
        ),
        (
            "date op with the wrong output format",
            "[[rule]]\ntarget = \"birth_date\"\nfrom = \"tgl\"\nops = [{ date = { parse = \"%d-%m-%Y\", format = \"%d/%m/%Y\" } }]",
            Some(2),
            "birth_date",
            "has format \"date\"",
        ),
        (
            "enum mismatch of a value map",
            "[[rule]]\ntarget = \"sex\"\nfrom = \"jk\"\nops = [{ value_map = { map = { L = \"M\", P = \"W\" } } }]",
            Some(2),
            "sex",
            "a possible value \"W\" does not fit \"sex\"",
        ),
        (
            "value map not total over the source enum",
            "[[rule]]\ntarget = \"sex\"\nfrom = \"jk\"\nops = [{ value_map = { map = { L = \"M\" } } }]",
            Some(2),
            "sex",
            "value_map: a possible value \"P\" fails",
        ),
        (
            "plain string into an enum",
            "[[rule]]\ntarget = \"sex\"\nfrom = \"nama\"",
            Some(2),
            "sex",
            "is one of [\"M\",\"F\"], but the value is not known to be; use a value_map",
        ),
        (
            "constant violates the target",
            "[[rule]]\ntarget = \"kind\"\nconst = \"tourist\"",
            Some(2),
            "kind",
            "a possible value \"tourist\" does not fit \"kind\"",
        ),
        (
            "constant violates a referenced pattern",
            "[[rule]]\ntarget = \"code\"\nconst = \"12a\"",
            Some(2),
            "code",
            "does not fit \"code\"",
        ),
        (
            "default violates the target",
            "[[rule]]\ntarget = \"place\"\nfrom = \"tempat\"\ndefault = 5",
            Some(2),
            "place",
            "a possible value 5 does not fit",
        ),
        (
            "duplicate target",
            "[[rule]]\ntarget = \"name\"\nfrom = \"nik\"",
            Some(2),
            "name",
            "rule 2 (name): rule 1 already writes \"name\"",
        ),
        (
            "overlapping targets",
            "[[rule]]\ntarget = \"address\"\nconst = { rt = \"1\" }\n[[rule]]\ntarget = \"address.rw\"\nfrom = \"kode\"",
            Some(3),
            "address.rw",
            "overlaps \"address\" written by rule 2",
        ),
        (
            "closed target extra field",
            "[[rule]]\ntarget = \"nickname\"\nfrom = \"nama\"",
            Some(2),
            "nickname",
            "target path \"nickname\" is not defined by b.dst@1",
        ),
        (
            "closed nested target extra field",
            "[[rule]]\ntarget = \"address.rt\"\nfrom = \"kode\"\n[[rule]]\ntarget = \"address.zip\"\nfrom = \"kode\"",
            Some(3),
            "address.zip",
            "is not defined by b.dst@1",
        ),
        (
            "writing inside a scalar",
            "[[rule]]\ntarget = \"age.years\"\nfrom = \"umur\"",
            Some(2),
            "age.years",
            "goes through \"age\", which is integer",
        ),
        (
            "unknown secret",
            "[[rule]]\ntarget = \"code\"\nfrom = \"nik\"\nops = [{ hash = { secret = \"other\" } }]",
            Some(2),
            "other",
            "unknown secret \"other\"; declare it in `secrets`",
        ),
        (
            "op on the wrong type",
            "[[rule]]\ntarget = \"place\"\nfrom = \"umur\"\nops = [\"trim\"]",
            Some(2),
            "place",
            "trim needs string but the value is integer",
        ),
        (
            "condition kind mismatch",
            "[[rule]]\nwhen = { field = \"umur\", op = \"eq\", value = \"17\" }\nfail = \"x\"",
            Some(2),
            "umur",
            "compares \"umur\" (integer) with \"17\"; that is never true",
        ),
        (
            "when without else may be missing for a required field",
            "[[rule]]\ntarget = \"address.rt\"\nwhen = { field = \"umur\", op = \"gt\", value = 17 }\nthen = { from = \"kode\" }",
            Some(2),
            "address.rt",
            "\"address.rt\" is required by b.dst@1 but the value may be missing; add a default",
        ),
        (
            "array items type",
            "[[rule]]\ntarget = \"labels\"\nfrom = \"tags\"",
            Some(2),
            "labels",
            "the value is string but \"labels\" in b.dst@1 is integer",
        ),
    ];
    let mut failures = Vec::new();
    for (name, extra, rule, path, want) in cases {
        let got = check(&format!("{OK_RULES}{extra}\n"));
        match (rule, &got) {
            (None, Ok(())) => {}
            (Some(r), Err(errors)) => {
                let hit = errors
                    .iter()
                    .any(|e| e.rule == Some(*r) && e.path == *path && e.to_string().contains(want));
                if !hit {
                    failures.push(format!("{name}: {errors:#?}"));
                }
            }
            _ => failures.push(format!("{name}: got {got:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn missing_required_targets_are_reported_recursively() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "top level",
            "[[rule]]\ntarget = \"nik\"\nfrom = \"nik\"",
            "name",
        ),
        (
            "inside a written object",
            "[[rule]]\ntarget = \"address.rw\"\nfrom = \"kode\"",
            "address.rt",
        ),
    ];
    for (name, rules, path) in cases {
        let rules = if name == &"top level" {
            rules.to_string()
        } else {
            format!("{OK_RULES}{rules}")
        };
        let errors = check(&rules).expect_err(name);
        let e = errors
            .iter()
            .find(|e| e.rule.is_none() && e.path == *path)
            .unwrap_or_else(|| panic!("{name}: {errors:#?}"));
        assert_eq!(
            e.to_string(),
            format!(
                "mapping: target field \"{path}\" is required by b.dst@1 but no rule produces it"
            )
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let errors = check(
        "[[rule]]\ntarget = \"nik\"\nfrom = \"nikk\"\n[[rule]]\ntarget = \"age\"\nfrom = \"nama\"",
    )
    .unwrap_err();
    let rules: Vec<Option<usize>> = errors.iter().map(|e| e.rule).collect();
    assert_eq!(rules, vec![Some(0), Some(1), None], "{errors:#?}");
}
