//! `mapping test`: validate → map → validate over JSON Lines.

use std::io::{BufRead, Write};

use serde_json::Value;

use crate::CheckedMapping;
use crate::apply::Secrets;

/// The first record of a test run that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("record {record}: {reason}")]
pub struct TestFailure {
    /// 1-based line number in the input.
    pub record: usize,
    pub reason: String,
}

/// Compiles a JSON Schema (draft 2020-12, formats asserted) for
/// [`run_test`].
pub fn compile_schema(
    schema: &Value,
) -> Result<jsonschema::Validator, jsonschema::ValidationError<'static>> {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
}

fn first_error(validator: &jsonschema::Validator, v: &Value) -> Option<String> {
    validator.iter_errors(v).next().map(|e| {
        let at = e.instance_path().to_string();
        if at.is_empty() {
            e.to_string()
        } else {
            format!("at {at}: {e}")
        }
    })
}

/// Reads JSON Lines from `input`; for each non-blank line validates the
/// record against the source schema, maps it, validates the result against
/// the target schema and writes it as one line to `output`. Returns the
/// number of records written, or the first failure.
pub fn run_test(
    mapping: &CheckedMapping,
    source_validator: &jsonschema::Validator,
    target_validator: &jsonschema::Validator,
    input: impl BufRead,
    mut output: impl Write,
    secrets: &Secrets,
) -> Result<usize, TestFailure> {
    let mut written = 0;
    for (i, line) in input.lines().enumerate() {
        let record = i + 1;
        let fail = |reason: String| TestFailure { record, reason };
        let line = line.map_err(|e| fail(format!("reading input: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Value =
            serde_json::from_str(&line).map_err(|e| fail(format!("not JSON: {e}")))?;
        if let Some(e) = first_error(source_validator, &value) {
            return Err(fail(format!(
                "invalid under {}: {e}",
                mapping.mapping().source()
            )));
        }
        let Value::Object(map) = &value else {
            return Err(fail("not a JSON object".into()));
        };
        let out = mapping
            .apply(map, secrets)
            .map_err(|e| fail(format!("mapping failed: {e}")))?;
        if let Some(e) = first_error(target_validator, &out) {
            return Err(fail(format!(
                "mapped record is invalid under {}: {e}",
                mapping.mapping().target()
            )));
        }
        writeln!(output, "{out}").map_err(|e| fail(format!("writing output: {e}")))?;
        written += 1;
    }
    output.flush().map_err(|e| TestFailure {
        record: written,
        reason: format!("writing output: {e}"),
    })?;
    Ok(written)
}
