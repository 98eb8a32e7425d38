//! Every operation, one table row a case: success and failure.

use jembatan_mapping::{Format, Mapping, Secrets};
use serde_json::{Value, json};

fn source_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "s": {"type": ["string", "null"]},
            "t": {"type": ["string", "null"]},
            "i": {"type": ["integer", "null"]},
            "f": {"type": ["number", "null"]},
            "b": {"type": ["boolean", "null"]},
            "a.b": {"type": ["string", "null"]},
            "u": {},
            "obj": {
                "type": "object",
                "properties": {"x": {"type": "string"}, "y.z": {"type": "string"}}
            }
        }
    })
}

/// Applies a one-rule (or more) mapping body to `record`.
fn run(rules: &str, record: Value) -> Result<Value, String> {
    let text = format!(
        "version = 1\nsource = \"a.src@1\"\ntarget = \"b.dst@1\"\nsecrets = [\"k\"]\n{rules}"
    );
    let mapping = Mapping::parse(&text, Format::Toml).map_err(|e| format!("parse: {e}"))?;
    let checked = mapping
        .check(&source_schema(), &json!({"type": "object"}))
        .map_err(|e| format!("check: {e:?}"))?;
    let mut secrets = Secrets::new();
    secrets.insert("k", b"secret-key".to_vec());
    let record = record.as_object().cloned().unwrap_or_default();
    checked.apply(&record, &secrets).map_err(|e| e.to_string())
}

enum Want {
    Out(Value),
    Err(&'static str),
}
use Want::{Err, Out};

fn rule(ops: &str) -> String {
    format!("[[rule]]\ntarget = \"out\"\nfrom = \"s\"\nops = [{ops}]\n")
}

#[test]
fn operations() {
    let cases: Vec<(&str, String, Value, Want)> = vec![
        // rename / move
        ("rename", "[[rule]]\ntarget = \"out\"\nfrom = \"s\"".into(), json!({"s": "x"}), Out(json!({"out": "x"}))),
        ("rename null stays null", "[[rule]]\ntarget = \"out\"\nfrom = \"s\"".into(), json!({"s": null}), Out(json!({"out": null}))),
        ("rename missing is omitted", "[[rule]]\ntarget = \"out\"\nfrom = \"s\"".into(), json!({}), Out(json!({}))),
        ("nested target", "[[rule]]\ntarget = \"a.b.c\"\nfrom = \"s\"".into(), json!({"s": "x"}), Out(json!({"a": {"b": {"c": "x"}}}))),
        ("escaped dot", "[[rule]]\ntarget = 'x\\.y'\nfrom = 'a\\.b'".into(), json!({"a.b": "v"}), Out(json!({"x.y": "v"}))),
        ("pointer paths", "[[rule]]\ntarget = \"/q/r.s\"\nfrom = \"/obj/y.z\"".into(), json!({"obj": {"y.z": "v"}}), Out(json!({"q": {"r.s": "v"}}))),
        ("nested source", "[[rule]]\ntarget = \"out\"\nfrom = \"obj.x\"".into(), json!({"obj": {"x": "v"}}), Out(json!({"out": "v"}))),
        ("default deny", "[[rule]]\ntarget = \"out\"\nfrom = \"s\"".into(), json!({"s": "x", "t": "secret"}), Out(json!({"out": "x"}))),
        // constants and defaults
        ("const", "[[rule]]\ntarget = \"out\"\nconst = { k = [1, 2] }".into(), json!({}), Out(json!({"out": {"k": [1, 2]}}))),
        ("default on missing", "[[rule]]\ntarget = \"out\"\nfrom = \"s\"\ndefault = \"-\"".into(), json!({}), Out(json!({"out": "-"}))),
        ("default on null", "[[rule]]\ntarget = \"out\"\nfrom = \"s\"\ndefault = \"-\"".into(), json!({"s": null}), Out(json!({"out": "-"}))),
        ("default not used", "[[rule]]\ntarget = \"out\"\nfrom = \"s\"\ndefault = \"-\"".into(), json!({"s": "x"}), Out(json!({"out": "x"}))),
        ("default op mid-pipeline", rule("{ default = \"L\" }, { value_map = { map = { L = \"M\" } } }"), json!({}), Out(json!({"out": "M"}))),
        // casts
        ("cast string to integer", rule("{ cast = \"integer\" }"), json!({"s": " 42 "}), Out(json!({"out": 42}))),
        ("cast bad integer", rule("{ cast = \"integer\" }"), json!({"s": "4x"}), Err("cannot cast a string of 2 characters to integer")),
        ("cast string to number", rule("{ cast = \"number\" }"), json!({"s": "1.5"}), Out(json!({"out": 1.5}))),
        ("cast nan is not a number", rule("{ cast = \"number\" }"), json!({"s": "NaN"}), Err("to number")),
        ("cast string to boolean", rule("{ cast = \"boolean\" }"), json!({"s": "TRUE"}), Out(json!({"out": true}))),
        ("cast bad boolean", rule("{ cast = \"boolean\" }"), json!({"s": "ya"}), Err("to boolean")),
        ("cast integer to string", "[[rule]]\ntarget = \"out\"\nfrom = \"i\"\nops = [{ cast = \"string\" }]".into(), json!({"i": 7}), Out(json!({"out": "7"}))),
        ("cast fraction to integer", "[[rule]]\ntarget = \"out\"\nfrom = \"f\"\nops = [{ cast = \"integer\" }]".into(), json!({"f": 1.5}), Err("cannot cast a number to integer")),
        ("cast whole float to integer", "[[rule]]\ntarget = \"out\"\nfrom = \"f\"\nops = [{ cast = \"integer\" }]".into(), json!({"f": 3.0}), Out(json!({"out": 3}))),
        ("cast boolean to integer", "[[rule]]\ntarget = \"out\"\nfrom = \"b\"\nops = [{ cast = \"integer\" }]".into(), json!({"b": true}), Out(json!({"out": 1}))),
        ("cast integer to boolean", "[[rule]]\ntarget = \"out\"\nfrom = \"i\"\nops = [{ cast = \"boolean\" }]".into(), json!({"i": 2}), Err("to boolean")),
        ("cast null stays null", rule("{ cast = \"integer\" }"), json!({"s": null}), Out(json!({"out": null}))),
        // dates
        ("date", rule("{ date = { parse = \"%d-%m-%Y\", format = \"%Y-%m-%d\" } }"), json!({"s": "17-08-1985"}), Out(json!({"out": "1985-08-17"}))),
        ("date invalid day", rule("{ date = { parse = \"%d-%m-%Y\", format = \"%Y-%m-%d\" } }"), json!({"s": "31-02-1985"}), Err("cannot parse a string of 10 characters as a date")),
        ("date wrong type", "[[rule]]\ntarget = \"out\"\nfrom = \"u\"\nops = [{ date = { parse = \"%Y\", format = \"%Y\" } }]".into(), json!({"u": 1}), Err("date: the value is a number, not a string")),
        ("date format asks for time", rule("{ date = { parse = \"%d-%m-%Y\", format = \"%H:%M\" } }"), json!({"s": "17-08-1985"}), Err("asks for fields")),
        ("datetime with offset", rule("{ datetime = { parse = \"%Y-%m-%d %H:%M:%S %z\", format = \"%+\" } }"), json!({"s": "2024-01-02 03:04:05 +0700"}), Out(json!({"out": "2024-01-02T03:04:05+07:00"}))),
        ("datetime naive", rule("{ datetime = { parse = \"%d/%m/%Y %H.%M\", format = \"%Y-%m-%dT%H:%M:%S\" } }"), json!({"s": "02/01/2024 03.04"}), Out(json!({"out": "2024-01-02T03:04:00"}))),
        ("datetime naive cannot show offset", rule("{ datetime = { parse = \"%d/%m/%Y %H.%M\", format = \"%+\" } }"), json!({"s": "02/01/2024 03.04"}), Err("asks for fields")),
        // value maps
        ("value map", rule("{ value_map = { map = { L = \"M\", P = \"F\" } } }"), json!({"s": "P"}), Out(json!({"out": "F"}))),
        ("value map unmapped fails", rule("{ value_map = { map = { L = \"M\", P = \"F\" } } }"), json!({"s": "X"}), Err("value_map: \"X\" is not in the map")),
        ("value map default", rule("{ value_map = { map = { L = \"M\" }, default = \"U\" } }"), json!({"s": "X"}), Out(json!({"out": "U"}))),
        ("value map numbers by text", "[[rule]]\ntarget = \"out\"\nfrom = \"i\"\nops = [{ value_map = { map = { 1 = \"ISLAM\", 2 = \"KRISTEN\" } } }]".into(), json!({"i": 2}), Out(json!({"out": "KRISTEN"}))),
        ("value map to booleans", rule("{ value_map = { map = { HIDUP = true, MENINGGAL = false } } }"), json!({"s": "MENINGGAL"}), Out(json!({"out": false}))),
        // concat / split
        ("concat", "[[rule]]\ntarget = \"out\"\nconcat = { from = [\"s\", \"i\", \"t\"], separator = \" \" }".into(), json!({"s": "a", "i": 3, "t": null}), Out(json!({"out": "a 3"}))),
        ("concat all null", "[[rule]]\ntarget = \"out\"\nconcat = { from = [\"s\", \"t\"], separator = \" \" }".into(), json!({}), Out(json!({"out": null}))),
        ("concat object fails", "[[rule]]\ntarget = \"out\"\nconcat = { from = [\"s\", \"obj\"] }".into(), json!({"s": "a", "obj": {}}), Err("check:")),
        ("concat object at run time", "[[rule]]\ntarget = \"out\"\nconcat = { from = [\"t\", \"s\"] }".into(), json!({"t": "a", "s": {}}), Err("concat: s is an object, not a scalar")),
        ("split to array", rule("{ split = { separator = \",\" } }"), json!({"s": "a,b,,c"}), Out(json!({"out": ["a", "b", "", "c"]}))),
        ("split pick part", rule("{ split = { separator = \"-\", part = 1 } }"), json!({"s": "17-08-1985"}), Out(json!({"out": "08"}))),
        ("split pick last", rule("{ split = { separator = \"-\", part = -1 } }"), json!({"s": "17-08-1985"}), Out(json!({"out": "1985"}))),
        ("split part out of range", rule("{ split = { separator = \"-\", part = 5 } }"), json!({"s": "a-b"}), Out(json!({"out": null}))),
        ("split huge negative part", rule("{ split = { separator = \"-\", part = -9223372036854775808 } }"), json!({"s": "a-b"}), Out(json!({"out": null}))),
        // mask / hash / string ops
        ("mask keep last 4", rule("{ mask = { keep_last = 4, char = \"*\" } }"), json!({"s": "3204011708850001"}), Out(json!({"out": "************0001"}))),
        ("mask keep first and last", rule("{ mask = { keep_first = 2, keep_last = 2, char = \"#\" } }"), json!({"s": "abcdef"}), Out(json!({"out": "ab##ef"}))),
        ("mask short and multibyte", rule("{ mask = { keep_last = 4 } }"), json!({"s": "ñé"}), Out(json!({"out": "ñé"}))),
        ("mask non-string fails", "[[rule]]\ntarget = \"out\"\nfrom = \"u\"\nops = [{ mask = { keep_last = 1 } }]".into(), json!({"u": 5}), Err("mask: the value is a number, not a string")),
        ("trim upper lower", rule("\"trim\", \"upper\""), json!({"s": "  siti  "}), Out(json!({"out": "SITI"}))),
        ("lower", rule("\"lower\""), json!({"s": "SITI"}), Out(json!({"out": "siti"}))),
        // conditionals
        ("when then", "[[rule]]\ntarget = \"out\"\nwhen = { field = \"s\", op = \"eq\", value = \"MENINGGAL\" }\nthen = { const = false }\nelse = { const = true }".into(), json!({"s": "MENINGGAL"}), Out(json!({"out": false}))),
        ("when else", "[[rule]]\ntarget = \"out\"\nwhen = { field = \"s\", op = \"eq\", value = \"MENINGGAL\" }\nthen = { const = false }\nelse = { const = true }".into(), json!({"s": "HIDUP"}), Out(json!({"out": true}))),
        ("when unknown takes else", "[[rule]]\ntarget = \"out\"\nwhen = { field = \"s\", op = \"eq\", value = \"MENINGGAL\" }\nthen = { const = false }\nelse = { const = true }".into(), json!({"s": null}), Out(json!({"out": true}))),
        ("when without else omits", "[[rule]]\ntarget = \"out\"\nwhen = { field = \"i\", op = \"gt\", value = 5 }\nthen = { from = \"s\", ops = [\"upper\"] }".into(), json!({"i": 1, "s": "x"}), Out(json!({}))),
        ("when with nested rule", "[[rule]]\ntarget = \"out\"\nwhen = { any = [{ field = \"i\", op = \"in\", values = [1, 2] }, { field = \"s\", op = \"prefix\", value = \"ab\" }] }\nthen = { from = \"s\", ops = [\"upper\"] }".into(), json!({"i": 9, "s": "abc"}), Out(json!({"out": "ABC"}))),
        ("when not", "[[rule]]\ntarget = \"out\"\nwhen = { not = { field = \"s\", op = \"is_null\" } }\nthen = { const = 1 }\nelse = { const = 0 }".into(), json!({}), Out(json!({"out": 0}))),
        ("else fails", "[[rule]]\ntarget = \"out\"\nwhen = { field = \"i\", op = \"ge\", value = 0 }\nthen = { from = \"i\" }\nelse = { fail = \"negative count\" }".into(), json!({"i": -1}), Err("rule 0 (out): negative count")),
        // arrays
        ("each", rule("{ split = { separator = \",\" } }, { each = [\"trim\", { cast = \"integer\" }] }"), json!({"s": "1, 2,3"}), Out(json!({"out": [1, 2, 3]}))),
        ("each failure names the element", rule("{ split = { separator = \",\" } }, { each = [{ cast = \"integer\" }] }"), json!({"s": "1,x"}), Err("element 1: cannot cast")),
        ("filter", rule("{ split = { separator = \" \" } }, { filter = { op = \"ne\", value = \"\" } }"), json!({"s": "a  b"}), Out(json!({"out": ["a", "b"]}))),
        ("filter then each", rule("{ split = { separator = \",\" } }, { filter = { op = \"prefix\", value = \"x\" } }, { each = [\"upper\"] }"), json!({"s": "xa,b,xc"}), Out(json!({"out": ["XA", "XC"]}))),
        ("each on non-array", "[[rule]]\ntarget = \"out\"\nfrom = \"u\"\nops = [{ each = [\"trim\"] }]".into(), json!({"u": "a"}), Err("each: the value is a string, not an array")),
        // assert / fail rules
        ("fail rule fires", "[[rule]]\ntarget = \"out\"\nfrom = \"s\"\n[[rule]]\nwhen = { field = \"s\", op = \"eq\", value = \"PINDAH\" }\nfail = \"moved away\"".into(), json!({"s": "PINDAH"}), Err("rule 1 (fail): moved away")),
        ("fail rule quiet", "[[rule]]\ntarget = \"out\"\nfrom = \"s\"\n[[rule]]\nwhen = { field = \"s\", op = \"eq\", value = \"PINDAH\" }\nfail = \"moved away\"".into(), json!({"s": "HIDUP"}), Out(json!({"out": "HIDUP"}))),
        ("fail rule unknown is quiet", "[[rule]]\ntarget = \"out\"\nfrom = \"s\"\n[[rule]]\nwhen = { field = \"s\", op = \"eq\", value = \"PINDAH\" }\nfail = \"moved away\"".into(), json!({}), Out(json!({}))),
        // wrong runtime types are errors, not panics
        ("trim on number", rule("\"trim\""), json!({"s": 5}), Err("trim: the value is a number, not a string")),
        ("value map on object", rule("{ value_map = { map = { a = 1 } } }"), json!({"s": {"a": 1}}), Err("value_map: the value is an object")),
    ];
    let mut failures = Vec::new();
    for (name, rules, record, want) in cases {
        let got = run(&rules, record);
        match (&want, &got) {
            (Out(w), Ok(g)) if w == g => {}
            (Err(w), Result::Err(g)) if g.contains(w) => {}
            _ => failures.push(format!("{name}: got {got:?}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn hash_is_keyed_hmac_sha256_hex() {
    let rules = "[[rule]]\ntarget = \"out\"\nfrom = \"s\"\nops = [{ hash = { secret = \"k\" } }]";
    let a = run(rules, json!({"s": "3204011708850001"})).unwrap();
    let b = run(rules, json!({"s": "3204011708850001"})).unwrap();
    let c = run(rules, json!({"s": "3204011708850002"})).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let h = a["out"].as_str().unwrap();
    assert_eq!(h.len(), 64);
    assert!(
        h.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?"
    let text = "version = 1\nsource = \"a.src@1\"\ntarget = \"b.dst@1\"\nsecrets = [\"k\"]\n[[rule]]\ntarget = \"out\"\nfrom = \"s\"\nops = [{ hash = { secret = \"k\" } }]";
    let checked = Mapping::parse(text, Format::Toml)
        .unwrap()
        .check(&source_schema(), &json!({"type": "object"}))
        .unwrap();
    let mut secrets = Secrets::new();
    secrets.insert("k", b"Jefe".to_vec());
    let rec = json!({"s": "what do ya want for nothing?"});
    let out = checked.apply(rec.as_object().unwrap(), &secrets).unwrap();
    assert_eq!(
        out["out"],
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(checked.secret_names().iter().collect::<Vec<_>>(), vec!["k"]);
    // a secret not supplied fails clearly, even for a null value
    let err = checked
        .apply(json!({"s": null}).as_object().unwrap(), &Secrets::new())
        .unwrap_err();
    assert_eq!(err.rule, 0);
    assert_eq!(
        err.to_string(),
        "rule 0 (out): secret \"k\" was not supplied"
    );
    assert_eq!(format!("{secrets:?}"), "{\"k\"}");
}
