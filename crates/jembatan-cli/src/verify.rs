//! `jembatan verify`: a list of keys verified against a provider's dataset
//! (an office's spreadsheet of beneficiaries checked against the population
//! registry), through `Exchange.VerifyBatch`, up to 10,000 keys a call.
//!
//! The input is CSV with a header line: one column holds the key (the
//! first, or `--key-column`), every other column is a field to verify,
//! named as the dataset names it; an empty cell is not verified. The
//! output is CSV: the key, the result (`matches`, `does_not_match`,
//! `not_found`) and, for each field, whether it matched. Every call's
//! receipt is checked against the answers received before they are
//! written out; the file appears only when every call's did.
//!
//! Exit codes as `jembatan query`: 0 done and verified, 1 failed, 2 usage
//! errors and unreachable brokers, 3 denied by policy.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::Args;
use jembatan_core::limits::MAX_VERIFY_BATCH_KEYS;
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::exchange_client::ExchangeClient;

use crate::failure::{Failure, exit};
use crate::query::{PayloadHash, print_receipt, refused, scalar};
use crate::schema::Connection;

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Dataset, `<agency>.<dataset>`; it must have a key field.
    #[arg(long)]
    dataset: String,
    /// The purpose (legal basis) of the agreement to use.
    #[arg(long)]
    purpose: String,
    /// The input column holding the keys [default: the first].
    #[arg(long, value_name = "COLUMN")]
    key_column: Option<String>,
    /// The CSV to verify [default: standard input].
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Write the answers to FILE (complete only once every receipt
    /// verifies) [default: standard output].
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Keys per call, at most 10,000.
    #[arg(long, default_value_t = MAX_VERIFY_BATCH_KEYS)]
    batch: usize,
}

pub(crate) async fn run(args: VerifyArgs, conn: &Connection) -> ExitCode {
    exit(verify(args, conn).await)
}

/// The list as read: the key column's name, the fields, and each row's
/// key and the values it verifies.
struct List {
    key_column: String,
    fields: Vec<String>,
    rows: Vec<(String, Vec<(usize, String)>)>,
}

fn read_list(input: impl Read, key_column: Option<&str>) -> Result<List, Failure> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| Failure::Usage(anyhow!("the input is not CSV: {e}")))?
        .iter()
        .map(str::to_owned)
        .collect();
    let key_at = match key_column {
        None => 0,
        Some(name) => header.iter().position(|h| h == name).ok_or_else(|| {
            Failure::Usage(anyhow!(
                "--key-column {name:?} is not a column of the input (it has {})",
                header.join(", ")
            ))
        })?,
    };
    if header.len() < 2 {
        return Err(Failure::Usage(anyhow!(
            "the input needs a key column and at least one column to verify; its header is {:?}",
            header.join(",")
        )));
    }
    let fields: Vec<(usize, String)> = header
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != key_at)
        .map(|(i, h)| (i, h.clone()))
        .collect();
    let mut rows = Vec::new();
    for (n, record) in reader.records().enumerate() {
        // the header is line 1
        let line = n + 2;
        let record =
            record.map_err(|e| Failure::Usage(anyhow!("input line {line}: not CSV: {e}")))?;
        let key = record.get(key_at).unwrap_or_default();
        if key.is_empty() {
            return Err(Failure::Usage(anyhow!(
                "input line {line}: the key is empty"
            )));
        }
        let values: Vec<(usize, String)> = fields
            .iter()
            .enumerate()
            .filter_map(|(f, (column, _))| {
                let v = record.get(*column).unwrap_or_default();
                (!v.is_empty()).then(|| (f, v.to_owned()))
            })
            .collect();
        if values.is_empty() {
            return Err(Failure::Usage(anyhow!(
                "input line {line}: no value to verify for key {key:?}"
            )));
        }
        rows.push((key.to_owned(), values));
    }
    Ok(List {
        key_column: header[key_at].clone(),
        fields: fields.into_iter().map(|(_, name)| name).collect(),
        rows,
    })
}

/// One item of the call: the key and its values, typed as `jembatan
/// lookup --verify` types them (a string unless written `int:N`, …).
fn item(list: &List, key: &str, values: &[(usize, String)]) -> Result<pb::VerifyItem, Failure> {
    let bad = |what: String, e: crate::query::BadValue| Failure::Usage(anyhow!("{what}: {e}"));
    let mut verify = std::collections::HashMap::new();
    for (f, v) in values {
        let field = &list.fields[*f];
        verify.insert(
            field.clone(),
            scalar(v).map_err(|e| bad(format!("key {key:?}, {field}"), e))?,
        );
    }
    Ok(pb::VerifyItem {
        key: Some(scalar(key).map_err(|e| bad(format!("key {key:?}"), e))?),
        verify,
    })
}

/// One answer as the broker sent it.
#[derive(serde::Deserialize)]
struct Answer {
    i: usize,
    result: String,
    #[serde(default)]
    fields: BTreeMap<String, bool>,
}

async fn verify(args: VerifyArgs, conn: &Connection) -> Result<(), Failure> {
    if args.batch == 0 || args.batch > MAX_VERIFY_BATCH_KEYS {
        return Err(Failure::Usage(anyhow!(
            "--batch {}: a call holds 1 to {MAX_VERIFY_BATCH_KEYS} keys",
            args.batch
        )));
    }
    let list = match &args.input {
        Some(path) => read_list(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
            args.key_column.as_deref(),
        )?,
        None => read_list(std::io::stdin().lock(), args.key_column.as_deref())?,
    };
    let mut client = ExchangeClient::new(conn.channel().await?).max_decoding_message_size(16 << 20);
    let progress = std::io::stderr().is_terminal();
    let total = list.rows.len();
    let mut answers: Vec<Answer> = Vec::with_capacity(total);
    let mut receipts = Vec::new();
    for chunk in list.rows.chunks(args.batch) {
        let items = chunk
            .iter()
            .map(|(key, values)| item(&list, key, values))
            .collect::<Result<Vec<_>, _>>()?;
        let request = pb::VerifyBatchRequest {
            dataset: args.dataset.clone(),
            purpose: args.purpose.clone(),
            items,
        };
        let mut stream = client
            .verify_batch(request)
            .await
            .map_err(refused)?
            .into_inner();
        let mut hash = PayloadHash::default();
        let mut receipt = None;
        let first = answers.len();
        loop {
            let message = stream.message().await.map_err(refused)?;
            let Some(message) = message else { break };
            match message.item {
                Some(pb::query_response::Item::Batch(batch)) => {
                    for text in batch.records {
                        hash.add(&text);
                        let answer: Answer = serde_json::from_str(&text).map_err(|e| {
                            Failure::Refused(anyhow!(
                                "the broker sent an answer that is not one: {e}"
                            ))
                        })?;
                        if answer.i != answers.len() - first {
                            return Err(Failure::Refused(anyhow!(
                                "the broker answered key {} out of order",
                                answer.i
                            )));
                        }
                        answers.push(answer);
                    }
                }
                Some(pb::query_response::Item::Receipt(r)) => receipt = Some(r),
                None => {}
            }
        }
        let receipt = receipt
            .ok_or_else(|| Failure::Refused(anyhow!("the call ended without its receipt")))?;
        hash.check(&receipt)?;
        if answers.len() - first != chunk.len() {
            return Err(Failure::Refused(anyhow!(
                "{} answers for {} keys",
                answers.len() - first,
                chunk.len()
            )));
        }
        receipts.push(receipt);
        if progress {
            eprint!("\r{} of {total} keys verified", answers.len());
        }
    }
    if progress {
        eprint!("\r\x1b[K");
    }
    write_answers(&args.output, &list, &answers)?;
    let count = |r: &str| answers.iter().filter(|a| a.result == r).count();
    let mut err = std::io::stderr().lock();
    writeln!(
        err,
        "{total} keys verified in {} calls: {} match, {} do not match, {} not found",
        receipts.len(),
        count("matches"),
        count("does_not_match"),
        count("not_found"),
    )?;
    for r in &receipts {
        print_receipt(&mut err, r)?;
    }
    Ok(())
}

/// The answers as CSV: the key, the result, and for each field whether it
/// matched (empty when it was not verified or the key was not found).
fn write_answers(path: &Option<PathBuf>, list: &List, answers: &[Answer]) -> Result<(), Failure> {
    let mut header = vec![list.key_column.clone(), "result".to_owned()];
    header.extend(list.fields.iter().cloned());
    let write = |out: &mut dyn Write| -> Result<(), Failure> {
        let mut writer = csv::Writer::from_writer(out);
        writer
            .write_record(&header)
            .map_err(|e| Failure::Usage(anyhow!("cannot write the answers: {e}")))?;
        for ((key, _), answer) in list.rows.iter().zip(answers) {
            let mut row = vec![key.clone(), answer.result.clone()];
            row.extend(list.fields.iter().map(|f| match answer.fields.get(f) {
                Some(true) => "true".to_owned(),
                Some(false) => "false".to_owned(),
                None => String::new(),
            }));
            writer
                .write_record(&row)
                .map_err(|e| Failure::Usage(anyhow!("cannot write the answers: {e}")))?;
        }
        writer
            .flush()
            .map_err(|e| Failure::Usage(anyhow!("cannot write the answers: {e}")))?;
        Ok(())
    };
    match path {
        None => write(&mut std::io::stdout().lock()),
        Some(path) => {
            let mut partial = path.clone().into_os_string();
            partial.push(".partial");
            let partial = PathBuf::from(partial);
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(&partial)
                    .with_context(|| format!("cannot create {}", partial.display()))?,
            );
            write(&mut file)?;
            file.flush()?;
            drop(file);
            std::fs::rename(&partial, path).with_context(|| {
                format!("cannot rename {} to {}", partial.display(), path.display())
            })?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_names_its_key_and_fields_and_skips_empty_cells() {
        let csv = "nik,nama_lengkap,tgl_lahir\n1507,SITI, \n1508,,1990-01-01\n";
        let list = read_list(csv.as_bytes(), None).unwrap();
        assert_eq!(list.key_column, "nik");
        assert_eq!(list.fields, ["nama_lengkap", "tgl_lahir"]);
        assert_eq!(
            list.rows,
            [
                ("1507".to_owned(), vec![(0, "SITI".to_owned())]),
                ("1508".to_owned(), vec![(1, "1990-01-01".to_owned())]),
            ]
        );
        let by_name = read_list("nama,nik\nSITI,1507\n".as_bytes(), Some("nik")).unwrap();
        assert_eq!(by_name.key_column, "nik");
        assert_eq!(by_name.fields, ["nama"]);
        assert_eq!(
            by_name.rows,
            [("1507".to_owned(), vec![(0, "SITI".to_owned())])]
        );
    }

    #[test]
    fn a_bad_list_is_refused_naming_the_line() {
        for (csv, key, want) in [
            ("nik\n1507\n", None, "at least one column to verify"),
            ("nik,nama\n,SITI\n", None, "input line 2: the key is empty"),
            (
                "nik,nama\n1507,\n",
                None,
                "input line 2: no value to verify",
            ),
            ("nik,nama\n1507,A\n", Some("no"), "--key-column \"no\""),
        ] {
            let err = match read_list(csv.as_bytes(), key) {
                Err(Failure::Usage(e)) => e.to_string(),
                Err(_) => panic!("{csv:?}: not a usage error"),
                Ok(_) => panic!("{csv:?}: accepted"),
            };
            assert!(err.contains(want), "{csv:?}: {err}");
        }
    }
}
