//! The configuration reference (`docs/configuration.md`) and the JSON
//! Schemas of the config files (`docs/config/*.schema.json`) are generated
//! from the config structs; these tests fail when the committed files
//! drift from the code, and check that every config file the repository
//! ships matches its schema.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

const UPDATE: &str = "JEMBATAN_UPDATE_CONFIG_DOCS";

/// The pattern of `jembatan_core::config_schema::HumanDuration`.
const DURATION_PATTERN: &str = "^\\s*[0-9]+\\s*[a-zA-Z]+(\\s*[0-9]+\\s*[a-zA-Z]+)*\\s*$";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A component with a config file: its name, the command that reads the
/// file, and the schema of the file.
struct Component {
    name: &'static str,
    title: &'static str,
    command: &'static str,
    schema: Value,
}

fn components() -> Vec<Component> {
    vec![
        Component {
            name: "broker",
            title: "Broker",
            command: "jembatan broker --config FILE",
            schema: jembatan_broker::config::BrokerConfig::schema().to_value(),
        },
        Component {
            name: "adapter",
            title: "Adapter",
            command: "jembatan adapter --config FILE",
            schema: jembatan_adapter::AdapterConfig::schema().to_value(),
        },
        Component {
            name: "console",
            title: "Console",
            command: "jembatan console --config FILE",
            schema: jembatan_console::config::ConsoleConfig::schema().to_value(),
        },
    ]
}

/// Follows a `$ref` to `#/$defs/NAME` in `root`.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r
                .strip_prefix("#/$defs/")
                .unwrap_or_else(|| panic!("unexpected $ref {r}"));
            resolve(root, &root["$defs"][name])
        }
        None => schema,
    }
}

/// The schema's types, without `null` (TOML has none: an optional key is
/// left out).
fn types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => Vec::new(),
    }
}

/// A table of the TOML: an object schema with named keys.
fn is_table(schema: &Value) -> bool {
    schema.get("properties").is_some()
}

/// The values an enum schema allows, if it is one.
fn enum_values(schema: &Value) -> Option<Vec<String>> {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        return Some(
            values
                .iter()
                .filter(|v| !v.is_null())
                .map(toml_value)
                .collect(),
        );
    }
    let variants = schema.get("oneOf")?.as_array()?;
    variants
        .iter()
        .map(|v| v.get("const").map(toml_value))
        .collect()
}

/// How a value is written in TOML.
fn toml_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(m) if m.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}

/// The type column: a word an operator knows, with the rule the schema
/// carries (pattern, range, values).
fn type_name(root: &Value, schema: &Value) -> String {
    let s = resolve(root, schema);
    if let Some(values) = enum_values(s) {
        let values: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
        return format!("one of {}", values.join(", "));
    }
    if let Some(title) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/$defs/"))
        && !is_table(s)
    {
        // a named form with its own rules (a filter, a field grant)
        return match title {
            "Filter" => "filter".into(),
            "HumanDuration" => "duration".into(),
            "FieldGrant" => "field name or `{ field, mode, mask }`".into(),
            other => other.into(),
        };
    }
    if s.get("pattern").and_then(Value::as_str) == Some(DURATION_PATTERN) {
        return "duration".into();
    }
    if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
        let forms: Vec<String> = any
            .iter()
            .filter(|v| {
                types(resolve(root, v)) != ["null"] && v.get("type") != Some(&"null".into())
            })
            .map(|v| type_name(root, v))
            .collect();
        return forms.join(" or ");
    }
    let ty = types(s);
    let mut name = match ty.as_slice() {
        ["string"] => match s.get("pattern").and_then(Value::as_str) {
            Some(p) => format!("string matching `{p}`"),
            None => "string".into(),
        },
        ["integer"] => "integer".into(),
        ["boolean"] => "boolean".into(),
        ["array"] => {
            let items = &s["items"];
            if is_table(resolve(root, items)) {
                "array of tables".into()
            } else {
                format!("array of {}", type_name(root, items))
            }
        }
        ["object"] if is_table(s) => "table".into(),
        ["object"] => match s.get("additionalProperties") {
            Some(v) if v.is_object() => format!("table of name = {}", type_name(root, v)),
            _ => "table".into(),
        },
        other => panic!("no type name for {other:?} in {s}"),
    };
    let min = s.get("minimum").map(Value::to_string);
    let max = s.get("maximum").map(Value::to_string);
    match (min, max) {
        (Some(min), Some(max)) => write!(name, ", {min} to {max}").unwrap(),
        (Some(min), None) if min != "0" => write!(name, ", at least {min}").unwrap(),
        _ => {}
    }
    name
}

/// One description in one table cell.
fn cell(text: &str) -> String {
    text.split("\n\n")
        .map(|para| para.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("<br><br>")
        .replace('|', "\\|")
}

/// The TOML header of the table at `path` (`agencies[]` is
/// `[[agencies]]`, `agreements[].quota` is `[agreements.quota]`).
fn header(path: &str) -> String {
    match path.strip_suffix("[]") {
        Some(array) => format!("[[{}]]", array.replace("[]", "")),
        None => format!("[{}]", path.replace("[]", "")),
    }
}

/// Appends the table at `path` to `out`, then the tables it holds.
/// Keys without a description, and optional keys whose default the
/// schema does not give, are collected in `undocumented`.
fn render_table(
    root: &Value,
    table: &Value,
    path: &str,
    out: &mut String,
    undocumented: &mut Vec<String>,
) {
    let table = resolve(root, table);
    let heading = if path.is_empty() {
        "Top level".to_string()
    } else {
        format!("`{}`", header(path))
    };
    writeln!(out, "### {heading}\n").unwrap();
    if let Some(d) = table.get("description").and_then(Value::as_str) {
        writeln!(out, "{}\n", cell(d)).unwrap();
    }
    out.push_str("| Key | Type | Required | Default | Description |\n");
    out.push_str("|---|---|---|---|---|\n");
    let required: Vec<&str> = table["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut nested = Vec::new();
    let properties = table["properties"].as_object().cloned().unwrap_or_default();
    for (key, schema) in &properties {
        let full = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let resolved = resolve(root, schema);
        // an optional table (`anyOf` its table and null) is documented as
        // the table, absent by default
        let optional_table = schema
            .get("anyOf")
            .and_then(Value::as_array)
            .and_then(|any| any.iter().map(|v| resolve(root, v)).find(|v| is_table(v)));
        let resolved = optional_table.unwrap_or(resolved);
        let description = schema
            .get("description")
            .or_else(|| resolved.get("description"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        if description.trim().is_empty() {
            undocumented.push(full.clone());
        }
        let mut ty = type_name(root, schema);
        if is_table(resolved) {
            ty = format!("table, see `{}`", header(&full));
            nested.push((full.clone(), resolved.clone()));
        } else if types(resolved) == ["array"] && is_table(resolve(root, &resolved["items"])) {
            let item = format!("{full}[]");
            ty = format!("array of tables, see `{}`", header(&item));
            nested.push((item, resolved["items"].clone()));
        }
        let is_required = required.contains(&key.as_str());
        let optional = matches!(schema.get("type"), Some(Value::Array(t)) if t.contains(&"null".into()))
            || schema
                .get("anyOf")
                .is_some_and(|a| a.to_string().contains("\"null\""));
        let default = match schema.get("default") {
            _ if is_required => String::new(),
            _ if optional_table.is_some() => "none".into(),
            // a table's defaults are its keys' defaults
            _ if is_table(resolved) => "see its keys".into(),
            Some(Value::Null) => "none".into(),
            Some(v) => format!("`{}`", toml_value(v)),
            None if types(resolved) == ["array"] => "`[]`".into(),
            None if optional => "none".into(),
            None => {
                undocumented.push(format!(
                    "{full} (optional, but the schema gives no default)"
                ));
                String::new()
            }
        };
        writeln!(
            out,
            "| `{full}` | {} | {} | {default} | {} |",
            cell(&ty),
            if is_required { "yes" } else { "no" },
            cell(description),
        )
        .unwrap();
    }
    out.push('\n');
    for (path, schema) in nested {
        render_table(root, &schema, &path, out, undocumented);
    }
}

/// The whole reference page, and the keys found without a description.
fn render() -> (String, Vec<String>) {
    let mut out = String::from(
        "# Configuration reference\n\n\
         <!-- Generated from the config structs by\n     \
         `JEMBATAN_UPDATE_CONFIG_DOCS=1 cargo test -p jembatan-cli --test config_reference`;\n     \
         do not edit by hand. -->\n\n\
         Every key of the broker's, the adapter's and the console's TOML config\n\
         files: its path in the file (`agencies[].adapter` is the `adapter` key of\n\
         each `[[agencies]]` table), its type, whether it is required, its\n\
         default, and what it means. Unknown keys are refused, so a misspelled\n\
         key stops the service from starting rather than being ignored.\n\
         Relative paths are taken from the directory of the config file.\n\
         Durations are written `\"30s\"`, `\"10m\"`, `\"1h 30m\"`.\n\n\
         The same rules as JSON Schemas, for editors that check TOML against a\n\
         schema (Taplo, Even Better TOML): [`config/broker.schema.json`](config/broker.schema.json),\n\
         [`config/adapter.schema.json`](config/adapter.schema.json),\n\
         [`config/console.schema.json`](config/console.schema.json). Some rules are\n\
         checked only when the service reads the file (a dataset's provider is\n\
         among the agencies, `replica_lease` is at least twice\n\
         `replica_heartbeat`, ...); `jembatan broker --config FILE` and the others\n\
         name the key at fault.\n\n\
         Annotated examples: `deploy/broker.toml`, `deploy/adapter-disdukcapil.toml`.\n\n",
    );
    let mut undocumented = Vec::new();
    for c in components() {
        writeln!(out, "## {}\n\n`{}`\n", c.title, c.command).unwrap();
        render_table(&c.schema, &c.schema, "", &mut out, &mut undocumented);
        for key in undocumented.iter_mut().filter(|k| !k.contains(':')) {
            *key = format!("{}: {key}", c.name);
        }
    }
    while out.ends_with("\n\n") {
        out.pop();
    }
    (out, undocumented)
}

/// Compares `generated` with the committed file at `rel`, or rewrites it
/// when `JEMBATAN_UPDATE_CONFIG_DOCS` is set.
fn check_committed(rel: &str, generated: &str) {
    let path = workspace_root().join(rel);
    if std::env::var_os(UPDATE).is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{rel} differs from what the config structs generate; rerun \
         `{UPDATE}=1 cargo test -p jembatan-cli --test config_reference` to rewrite it"
    );
}

#[test]
fn config_reference_matches_the_config_structs() {
    let (page, undocumented) = render();
    assert!(
        undocumented.is_empty(),
        "config keys without a doc comment or default (operators read them in docs/configuration.md): {undocumented:?}"
    );
    check_committed("docs/configuration.md", &page);
    for c in components() {
        let mut text = serde_json::to_string_pretty(&c.schema).unwrap();
        text.push('\n');
        check_committed(&format!("docs/config/{}.schema.json", c.name), &text);
    }
}

#[test]
fn every_key_of_the_broker_config_is_in_the_reference() {
    // spot checks that nested tables and arrays of tables are walked
    let (page, _) = render();
    for key in [
        "`agencies[].adapter`",
        "`tls.crl`",
        "`store_tls.allow_plaintext`",
        "`registry.schemas[].file`",
        "`agreements[].quota.rows_per_day`",
        "`datasets[].row_filter`",
        "`users[].password_hash`",
        "### `[[agreements]]`",
    ] {
        assert!(page.contains(key), "{key} is missing from the reference");
    }
}

/// The component whose config a shipped TOML file is, by its name.
fn component_of(file: &Path) -> Option<&'static str> {
    let name = file.file_name()?.to_str()?;
    if name.starts_with("broker") {
        Some("broker")
    } else if name.starts_with("adapter") {
        Some("adapter")
    } else if name.starts_with("console") {
        Some("console")
    } else {
        None
    }
}

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

/// What the schema finds wrong with `text`, if anything.
fn schema_errors(schema: &Value, text: &str) -> Vec<String> {
    let doc: toml::Table = toml::from_str(text).expect("config is TOML");
    let doc = serde_json::to_value(doc).unwrap();
    let validator = jsonschema::validator_for(schema).expect("schema compiles");
    validator
        .iter_errors(&doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn shipped_config_files_match_their_schemas() {
    let schemas: Map<String, Value> = components()
        .into_iter()
        .map(|c| (c.name.to_string(), c.schema))
        .collect();
    let mut files = Vec::new();
    toml_files(&workspace_root().join("deploy"), &mut files);
    files.sort();
    assert!(files.len() >= 6, "deploy/ configs not found: {files:?}");
    for file in &files {
        let component = component_of(file)
            .unwrap_or_else(|| panic!("{} is not named after a component", file.display()));
        let text = std::fs::read_to_string(file).unwrap();
        let errors = schema_errors(&schemas[component], &text);
        assert!(
            errors.is_empty(),
            "{} does not match the {component} schema: {errors:#?}",
            file.display()
        );
    }
    // the check can fail: a misspelled key, a missing key, a bad value
    let broker = std::fs::read_to_string(workspace_root().join("deploy/broker.toml")).unwrap();
    let bad = [
        broker.replacen("listen =", "lisen =", 1),
        broker.replacen("version = 1", "", 1),
        broker.replacen("operator_approval = ", "operator_approval = \"yes\" #", 1),
    ];
    for text in bad {
        assert_ne!(text, broker);
        assert!(!schema_errors(&schemas["broker"], &text).is_empty());
    }
}
