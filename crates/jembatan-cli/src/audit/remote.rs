//! `jembatan audit … --broker`: the log read through a running broker's
//! `Audit` service with an auditor's certificate. Nothing the broker
//! sends is taken on trust but what the checkpoint key signs: `verify`
//! checks every entry it streams (gap-free seqs, canonical bytes, their
//! SHA-256) and recomputes the Merkle tree to the roots of the signed
//! checkpoints it fetched; `proof` checks the inclusion proof against the
//! checkpoint's root before printing it. Each read is itself on the log
//! (an `audit_read` entry), so the log grows as it is read.

use std::io::Write;
use std::path::Path;

use anyhow::anyhow;
use jembatan_core::AuditEntry;
use jembatan_proto::v1 as pb;
use jembatan_proto::v1::audit_client::AuditClient;
use jembatan_store::EntryQuery;
use jembatan_tlog::merkle::{CompactRange, Hash, leaf_hash, verify_inclusion};
use jembatan_tlog::note::{Checkpoint, Verifier};
use tonic::transport::Channel;

use super::{CSV_HEADER, Format, csv, jsonl, raw_filter_line, read_verifier};
use crate::failure::Failure;
use crate::schema::{Connection, call_failed};

/// Entries asked for per page (the service's most).
const PAGE: u32 = 1000;

async fn client(conn: &Connection) -> Result<AuditClient<Channel>, Failure> {
    Ok(AuditClient::new(conn.channel().await?))
}

/// One page of entries and the next page's token (empty after the last).
async fn page(
    client: &mut AuditClient<Channel>,
    request: pb::QueryEntriesRequest,
) -> Result<(Vec<pb::AuditEntry>, String), Failure> {
    let mut stream = client
        .query_entries(request)
        .await
        .map_err(call_failed)?
        .into_inner();
    let mut entries = Vec::new();
    while let Some(entry) = stream.message().await.map_err(call_failed)? {
        entries.push(entry);
    }
    let next = entries
        .last()
        .map(|e| e.next_page_token.clone())
        .unwrap_or_default();
    Ok((entries, next))
}

fn timestamp(field: &str, instant: &str) -> Result<prost_types::Timestamp, Failure> {
    let t = jembatan_core::agreement::parse_instant(instant)
        .map_err(|e| Failure::Usage(anyhow!("--{field}: {e}")))?;
    Ok(prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

/// The service's request for the filters `audit query` takes.
pub(super) fn request(query: EntryQuery) -> Result<pb::QueryEntriesRequest, Failure> {
    Ok(pb::QueryEntriesRequest {
        agency: query.agency.unwrap_or_default(),
        dataset: query.dataset.unwrap_or_default(),
        purpose: query.purpose.unwrap_or_default(),
        decision: query.decision.unwrap_or_default(),
        status: query.status.unwrap_or_default(),
        from: query
            .from
            .as_deref()
            .map(|t| timestamp("from", t))
            .transpose()?,
        until: query
            .until
            .as_deref()
            .map(|t| timestamp("until", t))
            .transpose()?,
        page_size: PAGE,
        page_token: String::new(),
    })
}

/// Every entry matching `request`, page after page, written as `export`
/// and `query` write them (or, with `raw_filters`, only those holding a
/// consumer's filter values in clear).
pub(super) async fn query(
    conn: &Connection,
    mut request: pb::QueryEntriesRequest,
    format: Format,
    raw_filters: bool,
) -> Result<(), Failure> {
    let mut client = client(conn).await?;
    request.page_size = PAGE;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match (format, raw_filters) {
        (Format::Csv, false) => writeln!(out, "{CSV_HEADER}")?,
        (Format::Csv, true) => writeln!(out, "seq,exchange_id,time")?,
        (Format::Jsonl, _) => {}
    }
    let mut found = 0u64;
    loop {
        let (entries, next) = page(&mut client, request.clone()).await?;
        for e in &entries {
            if raw_filters {
                found += u64::from(raw_filter_line(&mut out, e.seq, &e.canonical, format)?);
                continue;
            }
            match format {
                Format::Jsonl => writeln!(out, "{}", jsonl(e.seq, &e.canonical, &e.entry_sha256)?)?,
                Format::Csv => writeln!(out, "{}", csv(e.seq, &e.canonical)?)?,
            }
        }
        if next.is_empty() {
            break;
        }
        request.page_token = next;
    }
    out.flush()?;
    if raw_filters {
        eprintln!("{found} entries hold filter values in clear");
    }
    Ok(())
}

/// The entries naming one subject, by the keyed hash computed here.
pub(super) async fn who_accessed(
    conn: &Connection,
    dataset: &jembatan_core::DatasetId,
    hash: &str,
) -> Result<(), Failure> {
    let mut client = client(conn).await?;
    let mut rows = Vec::new();
    let mut token = String::new();
    loop {
        let mut stream = client
            .subject_lookup(pb::SubjectLookupRequest {
                subject_hash: hash.to_owned(),
                page_size: PAGE,
                page_token: token.clone(),
            })
            .await
            .map_err(call_failed)?
            .into_inner();
        let mut next = String::new();
        while let Some(e) = stream.message().await.map_err(call_failed)? {
            next.clone_from(&e.next_page_token);
            rows.push((e.seq, e.canonical));
        }
        if next.is_empty() {
            break;
        }
        token = next;
    }
    super::print_subject_entries(dataset, hash, &rows)
}

/// A signed checkpoint the broker returned, opened with the key.
struct Signed {
    size: u64,
    root: Hash,
    /// When it was signed, and how long ago, in words.
    signed: String,
    /// When the broker says the next one is due, in words.
    next: Option<String>,
    /// The tree of the archived entries the broker no longer serves, as
    /// it states it (held to account by the signed root), when any are.
    archived: Option<CompactRange>,
}

fn refused(message: String) -> Failure {
    Failure::Refused(anyhow!("verification failed: {message}"))
}

fn age(t: &prost_types::Timestamp, now: chrono::DateTime<chrono::Utc>) -> Option<String> {
    let at = chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)?;
    let when = jembatan_core::agreement::format_instant(&at);
    let seconds = (now - at).num_seconds();
    let ago = if seconds >= 0 {
        format!(
            "{} ago",
            humantime::format_duration(std::time::Duration::from_secs(seconds.unsigned_abs()))
        )
    } else {
        format!(
            "in {}",
            humantime::format_duration(std::time::Duration::from_secs(seconds.unsigned_abs()))
        )
    };
    Some(format!("{when}, {ago}"))
}

/// Opens a checkpoint: its note must carry the key's signature and
/// origin and name the size and root the message states.
fn open(c: &pb::Checkpoint, verifier: &Verifier) -> Result<Signed, Failure> {
    let size = c.size;
    let opened = Checkpoint::open(&c.note, verifier).map_err(|e| {
        refused(format!(
            "checkpoint at size {size}: signature does not verify with key {}: {e}",
            verifier.to_key_string()
        ))
    })?;
    if opened.origin != verifier.name() {
        return Err(refused(format!(
            "checkpoint at size {size}: note names origin {:?}, expected {:?}",
            opened.origin,
            verifier.name()
        )));
    }
    if opened.size != size || opened.root.as_slice() != c.root_hash.as_slice() {
        return Err(refused(format!(
            "checkpoint at size {size}: the note signs size {} and another root than the broker states",
            opened.size
        )));
    }
    let now = chrono::Utc::now();
    let signed = c
        .signed_at
        .as_ref()
        .and_then(|t| age(t, now))
        .unwrap_or_else(|| "at a time the broker does not say".to_owned());
    let next = c.next_due.as_ref().and_then(|t| age(t, now)).map(|due| {
        format!(
            "the broker signs the next checkpoint by {due}, or sooner after {} new entries",
            c.next_after_entries
        )
    });
    let archived = match c.archived_up_to {
        0 => None,
        up_to => match CompactRange::from_slices(up_to, &c.archived_tree) {
            Some(tree) if up_to <= size => Some(tree),
            _ => {
                return Err(refused(format!(
                    "the broker states entries below {up_to} are archived, with a tree that \
                         does not describe them below its checkpoint at size {size}"
                )));
            }
        },
    };
    Ok(Signed {
        size,
        root: opened.root,
        signed,
        next,
        archived,
    })
}

async fn latest(
    client: &mut AuditClient<Channel>,
    verifier: &Verifier,
) -> Result<Option<Signed>, Failure> {
    match client
        .latest_checkpoint(pb::LatestCheckpointRequest {})
        .await
    {
        Ok(c) => open(&c.into_inner(), verifier).map(Some),
        Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
        Err(status) => Err(call_failed(status)),
    }
}

/// What streaming the log found: its size, the tree at the first
/// checkpoint's size, and the leaves after it (to check a checkpoint
/// signed while the log was read).
struct Streamed {
    size: u64,
    root: Hash,
    at_checkpoint: Option<CompactRange>,
    tail: Vec<Hash>,
    pages: u64,
}

/// Streams every entry, checking seqs, canonical bytes and SHA-256, and
/// the tree's root at `checkpoint`'s size.
async fn stream_log(
    client: &mut AuditClient<Channel>,
    checkpoint: Option<&Signed>,
) -> Result<Streamed, Failure> {
    let covered = checkpoint.map_or(0, |c| c.size);
    // entries below an archived point are not served: the tree resumes
    // there, as the broker states it, until the signed root checks it
    let mut tree = checkpoint
        .and_then(|c| c.archived.clone())
        .unwrap_or_default();
    let mut at_checkpoint = (covered == tree.size()).then(|| tree.clone());
    if let Some(c) = checkpoint
        && c.size == tree.size()
        && tree.root() != c.root
    {
        return Err(refused(format!(
            "checkpoint at size {}: root does not match the archived tree the broker states",
            c.size
        )));
    }
    let mut tail = Vec::new();
    let mut request = pb::QueryEntriesRequest {
        page_size: PAGE,
        ..Default::default()
    };
    let mut pages = 0u64;
    loop {
        let (entries, next) = page(client, request.clone()).await?;
        pages += 1;
        for e in &entries {
            let seq = e.seq;
            if seq != tree.size() {
                return Err(refused(format!(
                    "entry {} missing: the broker sent entry {seq} next",
                    tree.size()
                )));
            }
            AuditEntry::from_canonical(&e.canonical)
                .map_err(|err| refused(format!("entry {seq}: not a canonical entry: {err}")))?;
            if !AuditEntry::sha256_is(&e.canonical, &e.entry_sha256) {
                return Err(refused(format!(
                    "entry {seq}: entry_sha256 does not match the entry bytes"
                )));
            }
            let leaf = leaf_hash(&e.canonical);
            tree.push(leaf)
                .map_err(|_| refused(format!("entry {seq}: the tree is full")))?;
            if seq >= covered {
                tail.push(leaf);
            }
            if let Some(c) = checkpoint
                && tree.size() == c.size
            {
                if tree.root() != c.root {
                    return Err(refused(format!(
                        "checkpoint at size {}: root does not match the entries",
                        c.size
                    )));
                }
                at_checkpoint = Some(tree.clone());
            }
        }
        if next.is_empty() {
            break;
        }
        request.page_token = next;
    }
    if tree.size() < covered {
        return Err(refused(format!(
            "checkpoint at size {covered}: the broker served only {} entries",
            tree.size()
        )));
    }
    Ok(Streamed {
        size: tree.size(),
        root: tree.root(),
        at_checkpoint,
        tail,
        pages,
    })
}

/// `audit verify --broker`: every entry through the Audit service,
/// checked against the latest signed checkpoint before the stream and
/// the latest after it.
pub(super) async fn verify(conn: &Connection, public_key: &Path) -> Result<(), Failure> {
    let verifier = read_verifier(public_key)?;
    let mut client = client(conn).await?;
    let first = latest(&mut client, &verifier).await?;
    let log = stream_log(&mut client, first.as_ref()).await?;
    let archived = first
        .as_ref()
        .and_then(|c| c.archived.as_ref())
        .map_or(0, CompactRange::size);
    let mut checked = Vec::new();
    if let Some(c) = &first {
        checked.push(c.size);
    }
    // a checkpoint signed while the log was read covers more of it
    let mut newest = first;
    if let Some(after) = latest(&mut client, &verifier).await? {
        let before = newest.as_ref().map_or(0, |c| c.size);
        if after.size > before && after.size <= log.size {
            let mut tree = log.at_checkpoint.clone().unwrap_or_default();
            let more = usize::try_from(after.size - before).unwrap_or(usize::MAX);
            tree.extend(log.tail.iter().take(more).copied())
                .map_err(|_| refused("the tree is full".to_owned()))?;
            if tree.root() != after.root {
                return Err(refused(format!(
                    "checkpoint at size {}: root does not match the entries",
                    after.size
                )));
            }
            checked.push(after.size);
            newest = Some(after);
        } else if after.size < before {
            return Err(refused(format!(
                "the broker's latest checkpoint went back from size {before} to {}",
                after.size
            )));
        } else if after.size == before {
            newest = Some(after);
        }
    }
    let mut out = std::io::stdout().lock();
    let sizes = checked
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" and ");
    let checkpoints = match checked.len() {
        0 => "no signed checkpoint yet".to_owned(),
        1 => format!("the signed checkpoint at size {sizes}"),
        _ => format!("the signed checkpoints at sizes {sizes}"),
    };
    writeln!(
        out,
        "verified {} through the broker's Audit service, root {}, against {checkpoints}",
        super::entries_verified(log.size, archived),
        hex::encode(log.root),
    )?;
    let next = newest
        .as_ref()
        .and_then(|c| c.next.clone())
        .unwrap_or_else(|| super::NEXT_CHECKPOINT.to_owned());
    let covered = newest.map(|c| (c.size, c.signed));
    writeln!(out, "{}", super::coverage(log.size, covered, &next))?;
    if archived > 0 {
        writeln!(out, "{}", super::archived_note(archived))?;
    }
    let pages = match log.pages {
        1 => "1 page".to_owned(),
        n => format!("{n} pages"),
    };
    writeln!(
        out,
        "this verification read {pages}; each read is on the log as an audit_read entry, after the entries it read"
    )?;
    Ok(())
}

/// `audit proof --broker`: the broker's inclusion proof of one entry,
/// checked here against the checkpoint's root (and its signature, given
/// the key) before it is printed.
pub(super) async fn proof(
    conn: &Connection,
    index: u64,
    size: Option<u64>,
    public_key: Option<&Path>,
    archived: Option<Hash>,
) -> Result<(), Failure> {
    let verifier = public_key.map(read_verifier).transpose()?;
    let mut client = client(conn).await?;
    let answer = client
        .inclusion_proof(pb::InclusionProofRequest {
            index,
            tree_size: size.unwrap_or(0),
        })
        .await
        .map_err(call_failed)?
        .into_inner();
    let checkpoint = answer
        .checkpoint
        .ok_or_else(|| refused("the broker sent a proof without its checkpoint".to_owned()))?;
    let root: Hash = checkpoint
        .root_hash
        .as_slice()
        .try_into()
        .map_err(|_| refused("the checkpoint's root is not a SHA-256".to_owned()))?;
    if let Some(verifier) = &verifier {
        open(&checkpoint, verifier)?;
    }
    // the entry from its archive file, or as the broker serves it
    let leaf = match archived {
        Some(leaf) => leaf,
        None => {
            let (entries, _) = page(
                &mut client,
                pb::QueryEntriesRequest {
                    page_size: 1,
                    page_token: index.to_string(),
                    ..Default::default()
                },
            )
            .await?;
            let entry = entries
                .into_iter()
                .find(|e| e.seq == index)
                .ok_or_else(|| {
                    refused(format!(
                        "the broker did not send entry {index}; if it is archived, give the \
                     archive file holding it with --archive FILE"
                    ))
                })?;
            if !AuditEntry::sha256_is(&entry.canonical, &entry.entry_sha256) {
                return Err(refused(format!(
                    "entry {index}: entry_sha256 does not match the entry bytes"
                )));
            }
            leaf_hash(&entry.canonical)
        }
    };
    let hashes = answer
        .hashes
        .iter()
        .map(|h| Hash::try_from(h.as_slice()))
        .collect::<Result<Vec<Hash>, _>>()
        .map_err(|_| refused("a proof hash is not a SHA-256".to_owned()))?;
    verify_inclusion(&leaf, index, answer.tree_size, &hashes, &root).map_err(|e| {
        refused(format!(
            "the inclusion proof of entry {index} does not verify against the checkpoint at size {}: {e}",
            answer.tree_size
        ))
    })?;
    let out = serde_json::json!({
        "index": index,
        "size": answer.tree_size,
        "leaf_hash": hex::encode(leaf),
        "proof": hashes.iter().map(hex::encode).collect::<Vec<_>>(),
        "root": hex::encode(root),
        "checkpoint": checkpoint.note,
    });
    let text = serde_json::to_string_pretty(&out)
        .map_err(|e| Failure::Usage(anyhow!("cannot encode the proof: {e}")))?;
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}
