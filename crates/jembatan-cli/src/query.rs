//! `jembatan query` and `jembatan lookup`: a consumer's exchange from the
//! command line, with the agency's certificate. Records are streamed to
//! the output as they arrive (JSONL, CSV or Parquet), the receipt is checked
//! against the records received (the payload hash recomputed) and printed,
//! and a denial is shown with every reason the broker gave.
//!
//! Exit codes: 0 done and verified, 1 failed (a refused or broken call, a
//! receipt that does not match the records), 2 usage errors and
//! unreachable brokers, 3 denied by policy.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use clap::{Args, ValueEnum};
use jembatan_core::{PayloadHasher, Scalar};
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_client::ExchangeClient;
use jembatan_proto::v1::registry_client::RegistryClient;

use crate::failure::{Failure, exit};
use crate::filter_expr;
use crate::parquet_out::{self, ParquetError, ParquetSink};
use crate::schema::{Connection, call_failed};

/// How records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// One JSON object a line, exactly as the broker sent it.
    Jsonl,
    /// Comma-separated values with a header line (RFC 4180 quoting).
    Csv,
    /// Apache Parquet, columns typed by the records' registered schema,
    /// written a row group at a time.
    Parquet,
}

#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    /// Dataset, `<agency>.<dataset>`.
    #[arg(long)]
    dataset: String,
    /// The purpose (legal basis) of the agreement to use.
    #[arg(long)]
    purpose: String,
    /// Fields wanted, repeatable or comma-separated [default: every field
    /// the agreement grants].
    #[arg(long = "field", value_name = "FIELD", value_delimiter = ',')]
    fields: Vec<String>,
    /// Which records, as an expression, e.g.
    /// `kode_kecamatan = '15.07.07' and tgl_lahir >= '1990-01-01'`
    /// (and, or, not, parentheses, = != < <= > >=, in (...), is [not]
    /// null, starts with; strings in single quotes).
    #[arg(long, value_name = "EXPR")]
    filter: Option<String>,
    /// Records in this schema, `SCHEMA@VERSION` [default: the provider's].
    #[arg(long = "as", value_name = "SCHEMA@VERSION")]
    target: Option<String>,
    /// Most records [default: as many as the agreement allows].
    #[arg(long)]
    limit: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
    /// Write the records to FILE (complete only once the receipt verifies)
    /// [default: standard output].
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct LookupArgs {
    /// Dataset, `<agency>.<dataset>`.
    #[arg(long)]
    dataset: String,
    /// The purpose (legal basis) of the agreement to use.
    #[arg(long)]
    purpose: String,
    /// The value of the dataset's key, e.g. a NIK (`--key` names this
    /// caller's private key). Sent as a string; write `int:N`, `float:X`
    /// or `bool:B` for another type, `str:TEXT` for text that starts so.
    #[arg(value_name = "KEY")]
    lookup_key: String,
    /// Fields wanted, repeatable or comma-separated [default: every field
    /// the agreement grants for reading].
    #[arg(long = "field", value_name = "FIELD", value_delimiter = ',')]
    fields: Vec<String>,
    /// A value to verify against the record, `FIELD=VALUE` (repeatable):
    /// the answer says only whether it matches.
    #[arg(long = "verify", value_name = "FIELD=VALUE")]
    verify: Vec<String>,
    /// The record in this schema, `SCHEMA@VERSION` [default: the
    /// provider's].
    #[arg(long = "as", value_name = "SCHEMA@VERSION")]
    target: Option<String>,
    /// Print one JSON object: found, record, verified, receipt.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run_query(args: QueryArgs, conn: &Connection) -> ExitCode {
    exit(query(args, conn).await)
}

pub(crate) async fn run_lookup(args: LookupArgs, conn: &Connection) -> ExitCode {
    exit(lookup(args, conn).await)
}

/// The `--filter` expression, parsed; a mistake is shown under the
/// column where it is.
pub(crate) fn filter(text: Option<&str>) -> Result<Option<pb::Filter>, Failure> {
    text.map(|text| {
        filter_expr::parse(text).map(|f| f.to_proto()).map_err(|e| {
            Failure::Usage(anyhow!("--filter: {e}\n  {text}\n  {:>1$}", "^", e.column))
        })
    })
    .transpose()
}

/// The `--as SCHEMA@VERSION` target schema; empty for the provider's.
pub(crate) fn target_schema(target: Option<String>) -> Result<String, Failure> {
    let Some(t) = target else {
        return Ok(String::new());
    };
    match t.rsplit_once('@') {
        Some((name, version)) if !name.is_empty() && version.parse::<u32>().is_ok() => Ok(t),
        _ => Err(Failure::Usage(anyhow!(
            "--as {t:?}: write SCHEMA@VERSION, e.g. penduduk@2"
        ))),
    }
}

/// Why a `--key` or `--verify` value is refused before the call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadValue {
    #[error("{0:?} is not an integer")]
    NotInt(String),
    #[error("{0:?} is not a number")]
    NotFloat(String),
    #[error("{0:?} is not true or false")]
    NotBool(String),
    /// Beyond the limits every value the broker takes is held to.
    #[error(transparent)]
    Limits(#[from] jembatan_core::InvalidArgument),
}

/// A `--key` or `--verify` value: a string unless typed with a prefix;
/// checked against the same limits as every value the broker takes.
pub(crate) fn scalar(text: &str) -> Result<pb::Scalar, BadValue> {
    let value = if let Some(v) = text.strip_prefix("int:") {
        Scalar::Int(v.parse().map_err(|_| BadValue::NotInt(v.to_owned()))?)
    } else if let Some(v) = text.strip_prefix("float:") {
        Scalar::Float(v.parse().map_err(|_| BadValue::NotFloat(v.to_owned()))?)
    } else if let Some(v) = text.strip_prefix("bool:") {
        Scalar::Bool(match v {
            "true" => true,
            "false" => false,
            _ => return Err(BadValue::NotBool(v.to_owned())),
        })
    } else {
        Scalar::String(text.strip_prefix("str:").unwrap_or(text).to_owned())
    };
    value.validate()?;
    Ok(value.to_proto())
}

/// The receipt's payload hash, recomputed from the records as received:
/// SHA-256 over each record's JSON text followed by one `\n` byte, the
/// last record included, in the order they arrived.
#[derive(Default)]
pub(crate) struct PayloadHash {
    hasher: PayloadHasher,
    rows: u64,
    bytes: u64,
}

impl PayloadHash {
    pub(crate) fn add(&mut self, record: &str) {
        self.hasher.update(record);
        self.rows += 1;
        self.bytes += record.len() as u64;
    }

    /// Compares with the receipt: hash, record count and byte count.
    pub(crate) fn check(&self, receipt: &pb::Receipt) -> Result<(), Failure> {
        let hash = self.hasher.hex();
        if hash != receipt.payload_sha256 {
            return Err(Failure::Refused(anyhow!(
                "the receipt does not match the records received: payload hash {hash}, the receipt says {}",
                receipt.payload_sha256
            )));
        }
        if self.rows != receipt.rows || self.bytes != receipt.bytes {
            return Err(Failure::Refused(anyhow!(
                "the receipt does not match the records received: {} records of {} bytes, the receipt says {} of {}",
                self.rows,
                self.bytes,
                receipt.rows,
                receipt.bytes
            )));
        }
        Ok(())
    }
}

/// Where records go as they arrive.
enum Sink {
    Jsonl(Box<dyn Write + Send>),
    Csv {
        out: Box<dyn Write + Send>,
        /// Columns, once known (from `--field` or the first record).
        columns: Option<Vec<String>>,
        header_written: bool,
    },
    Parquet(Box<ParquetSink<Box<dyn Write + Send>>>),
}

impl Sink {
    fn write(&mut self, record: &str) -> Result<(), Failure> {
        match self {
            Sink::Jsonl(out) => {
                out.write_all(record.as_bytes())?;
                out.write_all(b"\n")?;
            }
            Sink::Csv {
                out,
                columns,
                header_written,
            } => {
                let object = Ordered::parse(record)?;
                let columns = columns
                    .get_or_insert_with(|| object.0.iter().map(|(k, _)| k.clone()).collect());
                if !*header_written {
                    csv_header(out, columns)?;
                    *header_written = true;
                }
                let cells: Vec<String> = columns.iter().map(|c| csv_cell(object.get(c))).collect();
                writeln!(out, "{}", cells.join(","))?;
            }
            Sink::Parquet(sink) => sink.write(record).map_err(parquet_failure)?,
        }
        Ok(())
    }

    fn finish(self) -> Result<(), Failure> {
        match self {
            Sink::Jsonl(mut out) => out.flush()?,
            Sink::Parquet(sink) => sink.finish().map_err(parquet_failure)?.flush()?,
            Sink::Csv {
                mut out,
                columns,
                header_written,
            } => {
                // no record: the header alone, when the columns are known
                if let (false, Some(columns)) = (header_written, columns) {
                    csv_header(&mut out, &columns)?;
                }
                out.flush()?;
            }
        }
        Ok(())
    }
}

fn csv_header(out: &mut dyn Write, columns: &[String]) -> std::io::Result<()> {
    let names: Vec<String> = columns.iter().map(|c| csv_quote(c)).collect();
    writeln!(out, "{}", names.join(","))
}

/// One CSV cell: strings as they are, numbers and booleans as JSON writes
/// them, null or absent empty, objects and arrays as JSON text.
fn csv_cell(value: Option<&serde_json::Value>) -> String {
    use serde_json::Value as J;
    match value {
        None | Some(J::Null) => String::new(),
        Some(J::String(s)) => csv_quote(s),
        Some(other) => csv_quote(&other.to_string()),
    }
}

/// RFC 4180: quoted when it holds a comma, a quote, a line break or
/// leading or trailing space; quotes inside doubled.
pub(crate) fn csv_quote(text: &str) -> String {
    let needs = text.contains([',', '"', '\n', '\r'])
        || text.starts_with(char::is_whitespace)
        || text.ends_with(char::is_whitespace);
    if needs {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// A JSON object with its keys in the order the record has them.
struct Ordered(Vec<(String, serde_json::Value)>);

impl Ordered {
    fn parse(record: &str) -> Result<Self, Failure> {
        serde_json::from_str(record).map_err(|e| {
            Failure::Refused(anyhow!(
                "the broker sent a record that is not a JSON object: {e}"
            ))
        })
    }

    fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

impl<'de> serde::Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Ordered, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, serde_json::Value>()? {
                    out.push(entry);
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A record the Parquet file cannot take is a "no" (exit 1); a file that
/// cannot be written, a usage error.
fn parquet_failure(err: ParquetError) -> Failure {
    match err {
        ParquetError::Write(_) => Failure::Usage(anyhow!(err)),
        other => Failure::Refused(anyhow!("--format parquet: {other}")),
    }
}

/// The column types of a Parquet output: from the registered schema the
/// records are in (`--as`, else the dataset's latest version); every
/// column text when the registry has no schema for them.
async fn parquet_types(
    conn: &Connection,
    dataset: &str,
    target: &str,
) -> Result<parquet_out::Types, Failure> {
    let reference = if target.is_empty() {
        format!("{dataset}@latest")
    } else {
        target.to_owned()
    };
    let mut registry = RegistryClient::new(conn.channel().await?);
    match registry
        .get_schema(pb::GetSchemaRequest {
            reference: reference.clone(),
        })
        .await
    {
        Ok(v) => {
            let v = v.into_inner();
            let schema: serde_json::Value = serde_json::from_str(&v.schema_json)
                .with_context(|| format!("the registry sent {reference} as invalid JSON"))?;
            Ok(parquet_out::Types {
                schema: Some(format!("{}@{}", v.dataset, v.version)),
                columns: parquet_out::column_types(&schema),
            })
        }
        Err(status) if status.code() == tonic::Code::NotFound => {
            eprintln!("no schema {reference} is registered: every Parquet column is text");
            Ok(parquet_out::Types {
                schema: None,
                columns: Vec::new(),
            })
        }
        Err(status) => Err(call_failed(status)),
    }
}

/// The records file: written as `FILE.partial`, renamed to FILE once the
/// receipt verifies, removed otherwise.
struct Output {
    partial: Option<(PathBuf, PathBuf)>,
}

impl Output {
    fn open(path: Option<PathBuf>) -> Result<(Self, Box<dyn Write + Send>), Failure> {
        match path {
            None => Ok((
                Output { partial: None },
                Box::new(std::io::BufWriter::new(std::io::stdout())),
            )),
            Some(path) => {
                let mut partial = path.clone().into_os_string();
                partial.push(".partial");
                let partial = PathBuf::from(partial);
                let file = std::fs::File::create(&partial)
                    .with_context(|| format!("cannot create {}", partial.display()))?;
                Ok((
                    Output {
                        partial: Some((partial, path)),
                    },
                    Box::new(std::io::BufWriter::with_capacity(1 << 16, file)),
                ))
            }
        }
    }

    fn keep(self) -> Result<(), Failure> {
        if let Some((partial, path)) = &self.partial {
            std::fs::rename(partial, path).with_context(|| {
                format!("cannot rename {} to {}", partial.display(), path.display())
            })?;
        }
        Ok(())
    }

    /// Leaves `FILE.partial` in place; its path, when there is a file.
    fn leave_partial(self) -> Option<PathBuf> {
        self.partial.map(|(partial, _)| partial)
    }

    fn discard(self) {
        if let Some((partial, _)) = &self.partial {
            let _ = std::fs::remove_file(partial);
        }
    }
}

/// A progress line on standard error, only when it is a terminal.
struct Progress {
    on: bool,
    last: Instant,
}

impl Progress {
    fn new() -> Self {
        Self {
            on: std::io::stderr().is_terminal(),
            last: Instant::now(),
        }
    }

    fn update(&mut self, rows: u64, bytes: u64) {
        if self.on && self.last.elapsed() >= Duration::from_millis(200) {
            self.last = Instant::now();
            eprint!("\r{rows} records, {} received", human_bytes(bytes));
        }
    }

    fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A refused call: a denial (exit 3) is shown with every reason from the
/// `jembatan-denial-bin` trailer; anything else as [`call_failed`].
pub(crate) fn refused(status: tonic::Status) -> Failure {
    let details = jembatan_proto::trailers::denial_details(status.metadata());
    match details {
        Some(details) => Failure::Denied(anyhow!("{}", denial_text(&details))),
        None => call_failed(status),
    }
}

fn denial_text(details: &pb::DenialDetails) -> String {
    // the status message repeats the reasons; here they are one a line
    let mut text = format!(
        "denied: the exchange is refused by policy (audit entry {}, exchange {})",
        details.entry_seq, details.exchange_id
    );
    for r in &details.reasons {
        let code = pb::DenialCode::try_from(r.code)
            .map(|c| c.as_str_name())
            .unwrap_or("DENIAL_CODE_UNSPECIFIED");
        text.push_str(&format!("\n  {} ({code}): {}", r.reason, r.message));
        if !r.agreement_id.is_empty() {
            text.push_str(&format!(" [agreement {}]", r.agreement_id));
        }
        if !r.fields.is_empty() {
            text.push_str(&format!(" [fields {}]", r.fields.join(", ")));
        }
    }
    text
}

pub(crate) fn print_receipt(out: &mut dyn Write, r: &pb::Receipt) -> std::io::Result<()> {
    let completed = crate::agreement::time_text(&r.completed_at).unwrap_or_default();
    writeln!(out, "receipt verified")?;
    writeln!(out, "  exchange      {}", r.exchange_id)?;
    writeln!(
        out,
        "  entry         {} (leaf index on the audit log)",
        r.entry_seq
    )?;
    writeln!(out, "  decision      {}", r.decision_seq)?;
    writeln!(out, "  leaf hash     {}", r.leaf_hash)?;
    let records = if r.rows == 1 { "record" } else { "records" };
    writeln!(
        out,
        "  payload hash  {} ({} {records}, {} bytes)",
        r.payload_sha256, r.rows, r.bytes
    )?;
    writeln!(out, "  completed     {completed}")
}

fn receipt_json(r: &pb::Receipt) -> serde_json::Value {
    serde_json::json!({
        "exchange_id": r.exchange_id,
        "entry_seq": r.entry_seq,
        "decision_seq": r.decision_seq,
        "leaf_hash": r.leaf_hash,
        "entry_sha256": r.entry_sha256,
        "payload_sha256": r.payload_sha256,
        "rows": r.rows,
        "bytes": r.bytes,
        "verified": true,
    })
}

async fn query(args: QueryArgs, conn: &Connection) -> Result<(), Failure> {
    // arguments are checked before the broker is called
    let filter = filter(args.filter.as_deref())?;
    let target_schema = target_schema(args.target)?;
    if args.format == Format::Parquet && args.output.is_none() && std::io::stdout().is_terminal() {
        return Err(Failure::Usage(anyhow!(
            "--format parquet writes binary: give --output FILE or redirect standard output"
        )));
    }
    let types = match args.format {
        Format::Parquet => Some(parquet_types(conn, &args.dataset, &target_schema).await?),
        _ => None,
    };
    let request = pb::QueryRequest {
        dataset: args.dataset,
        target_schema,
        purpose: args.purpose,
        fields: args.fields.clone(),
        filter,
        limit: args.limit.unwrap_or(0),
    };
    let to_file = args.output.is_some();
    let mut client = ExchangeClient::new(conn.channel().await?);
    let mut stream = client.query(request).await.map_err(refused)?.into_inner();
    let (output, writer) = Output::open(args.output)?;
    let mut sink = match args.format {
        Format::Jsonl => Sink::Jsonl(writer),
        Format::Csv => Sink::Csv {
            out: writer,
            columns: (!args.fields.is_empty()).then_some(args.fields),
            header_written: false,
        },
        Format::Parquet => Sink::Parquet(Box::new(ParquetSink::new(
            writer,
            types.unwrap_or(parquet_out::Types {
                schema: None,
                columns: Vec::new(),
            }),
            (!args.fields.is_empty()).then_some(args.fields),
        ))),
    };
    let mut hash = PayloadHash::default();
    let mut progress = Progress::new();
    let mut receipt = None;
    let mut stopped = None;
    let streamed: Result<(), Failure> = async {
        loop {
            let msg = match stream.message().await {
                Ok(Some(msg)) => msg,
                Ok(None) => break,
                Err(status) => {
                    stopped = Some(status);
                    return Ok(());
                }
            };
            match msg.item {
                Some(pb::query_response::Item::Batch(batch)) => {
                    for record in &batch.records {
                        hash.add(record);
                        sink.write(record)?;
                    }
                    progress.update(hash.rows, hash.bytes);
                }
                Some(pb::query_response::Item::Receipt(r)) => receipt = Some(r),
                None => {}
            }
        }
        if receipt.is_none() {
            receipt = stream
                .trailers()
                .await
                .map_err(refused)?
                .as_ref()
                .and_then(jembatan_proto::trailers::receipt);
        }
        Ok(())
    }
    .await;
    progress.clear();
    if let Some(status) = stopped {
        // stopped while records flowed (a revoked agreement, a spent
        // quota): the trailers' receipt covers what was delivered, which
        // is kept as FILE.partial when it verifies
        let delivered = sink
            .finish()
            .ok()
            .and(jembatan_proto::trailers::receipt(status.metadata()));
        match delivered {
            Some(r) if r.rows > 0 && hash.check(&r).is_ok() => {
                if let Some(path) = output.leave_partial() {
                    eprintln!(
                        "the exchange stopped after {} records; {} holds them",
                        r.rows,
                        path.display()
                    );
                }
                print_receipt(&mut std::io::stderr().lock(), &r)?;
            }
            _ => output.discard(),
        }
        return Err(refused(status));
    }
    let checked = streamed
        .and_then(|()| sink.finish())
        .and_then(|()| {
            receipt.ok_or_else(|| Failure::Refused(anyhow!("the broker sent no receipt")))
        })
        .and_then(|r| hash.check(&r).map(|()| r));
    let receipt = match checked {
        Ok(r) => r,
        Err(e) => {
            output.discard();
            return Err(e);
        }
    };
    output.keep()?;
    if to_file {
        print_receipt(&mut std::io::stdout().lock(), &receipt)?;
    } else {
        print_receipt(&mut std::io::stderr().lock(), &receipt)?;
    }
    Ok(())
}

async fn lookup(args: LookupArgs, conn: &Connection) -> Result<(), Failure> {
    let key = scalar(&args.lookup_key).map_err(|e| Failure::Usage(anyhow!("KEY: {e}")))?;
    let mut verify = std::collections::HashMap::new();
    for spec in &args.verify {
        let (field, value) = spec
            .split_once('=')
            .filter(|(f, _)| !f.is_empty())
            .ok_or_else(|| Failure::Usage(anyhow!("--verify {spec:?}: write FIELD=VALUE")))?;
        let value = scalar(value).map_err(|e| Failure::Usage(anyhow!("--verify {field}: {e}")))?;
        if verify.insert(field.to_owned(), value).is_some() {
            return Err(Failure::Usage(anyhow!("--verify {field} is given twice")));
        }
    }
    let request = pb::LookupRequest {
        dataset: args.dataset,
        target_schema: target_schema(args.target)?,
        purpose: args.purpose,
        fields: args.fields,
        key: Some(key),
        verify,
    };
    let mut client = ExchangeClient::new(conn.channel().await?);
    let response = client.lookup(request).await.map_err(refused)?;
    let header_receipt = jembatan_proto::trailers::receipt(response.metadata());
    let answer = response.into_inner();
    let receipt = answer
        .receipt
        .clone()
        .or(header_receipt)
        .ok_or_else(|| Failure::Refused(anyhow!("the broker sent no receipt")))?;
    let mut hash = PayloadHash::default();
    if answer.found {
        hash.add(&answer.record);
    }
    hash.check(&receipt)?;
    let mut out = std::io::stdout().lock();
    let mut verified: Vec<(&String, &bool)> = answer.verified.iter().collect();
    verified.sort();
    if args.json {
        let record = if answer.found {
            serde_json::from_str::<serde_json::Value>(&answer.record)
                .context("the broker sent a record that is not JSON")?
        } else {
            serde_json::Value::Null
        };
        let verified: serde_json::Map<String, serde_json::Value> = verified
            .iter()
            .map(|(k, v)| ((*k).clone(), serde_json::Value::Bool(**v)))
            .collect();
        let all = serde_json::json!({
            "found": answer.found,
            "record": record,
            "verified": verified,
            "receipt": receipt_json(&receipt),
        });
        writeln!(out, "{all}")?;
        return Ok(());
    }
    if answer.found {
        writeln!(out, "{}", answer.record)?;
    } else {
        writeln!(out, "not found")?;
    }
    for (field, ok) in verified {
        writeln!(
            out,
            "verify {field}: {}",
            if *ok { "matches" } else { "does not match" }
        )?;
    }
    print_receipt(&mut out, &receipt)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting() {
        let cases = [
            ("plain", "SITI AMINAH", "SITI AMINAH"),
            ("comma", "a,b", "\"a,b\""),
            ("quote", "say \"hi\"", "\"say \"\"hi\"\"\""),
            ("newline", "a\nb", "\"a\nb\""),
            ("carriage return", "a\rb", "\"a\rb\""),
            ("leading space", " a", "\" a\""),
            ("empty", "", ""),
        ];
        for (name, text, want) in cases {
            assert_eq!(csv_quote(text), want, "{name}");
        }
        assert_eq!(csv_cell(Some(&serde_json::json!(null))), "");
        assert_eq!(csv_cell(None), "");
        assert_eq!(csv_cell(Some(&serde_json::json!(12))), "12");
        assert_eq!(csv_cell(Some(&serde_json::json!(true))), "true");
        assert_eq!(
            csv_cell(Some(&serde_json::json!([1, "a"]))),
            "\"[1,\"\"a\"\"]\""
        );
    }

    #[test]
    fn payload_hash_is_each_record_then_a_newline() {
        let records = ["{\"a\":1}", "{\"a\":2}"];
        let mut hash = PayloadHash::default();
        records.iter().for_each(|r| hash.add(r));
        let want = PayloadHasher::of(&records);
        let receipt = pb::Receipt {
            payload_sha256: want,
            rows: 2,
            bytes: 14,
            ..Default::default()
        };
        assert!(hash.check(&receipt).is_ok());
        let mut short = PayloadHash::default();
        short.add(records[0]);
        assert!(short.check(&receipt).is_err());
    }

    #[test]
    fn key_values() {
        use pb::scalar::Kind;
        let cases = [
            (
                "3507123412340001",
                Some(Kind::StringValue("3507123412340001".into())),
            ),
            ("int:42", Some(Kind::IntValue(42))),
            ("float:1.5", Some(Kind::DoubleValue(1.5))),
            ("bool:true", Some(Kind::BoolValue(true))),
            ("str:int:1", Some(Kind::StringValue("int:1".into()))),
            ("int:x", None),
            ("bool:yes", None),
            ("float:inf", None),
            ("float:-0", None),
            ("a\0b", None),
        ];
        for (text, want) in cases {
            assert_eq!(scalar(text).ok().and_then(|s| s.kind), want, "{text}");
        }
    }

    #[test]
    fn record_keys_keep_their_order() {
        let o = Ordered::parse("{\"z\":1,\"a\":2}").ok().unwrap();
        let keys: Vec<&str> = o.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["z", "a"]);
    }
}
