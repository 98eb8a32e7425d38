//! What the broker does to each record an adapter sends before it may be
//! delivered: checks it is a JSON object of granted fields, shapes it
//! (masks, verifies) and translates it into the consumer's schema.
//!
//! This work is per record and independent of the records around it, so
//! a running query that shapes or translates its records hands each batch
//! to a worker thread and reads the next batch meanwhile ([`Workers`]);
//! records delivered as they came only have their keys read, at once.
//! Everything that depends on order — the hashes, the counts, the limits,
//! the quota — stays with the relay.

use std::collections::BTreeMap;
use std::sync::Arc;

use jembatan_core::Filter;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::exchange::{Allowed, Shape};
use crate::registry::Translator;

/// Most bytes of one record the broker accepts from an adapter.
const MAX_RECORD_BYTES: usize = 1 << 20;

/// The per-record work of one exchange, shared with the worker threads.
#[derive(Debug)]
pub(crate) struct Admit {
    /// The columns the adapter was asked for: the only keys a record may hold.
    columns: Vec<String>,
    shape: Option<Shape>,
    translation: Option<Translate>,
}

#[derive(Debug)]
struct Translate {
    translator: Arc<Translator>,
    residual: Option<Filter>,
    fields: Vec<String>,
}

/// Whether the records an exchange delivers differ from what its adapter
/// sends: translated, masked or with verified fields dropped.
pub(crate) fn changes_records(allowed: &Allowed) -> bool {
    allowed.translation.is_some() || allowed.shape.is_some()
}

/// One batch, admitted.
#[derive(Debug, Default)]
pub(crate) struct Admitted {
    /// What may be delivered, in the adapter's order.
    pub(crate) records: Vec<String>,
    /// For a lookup with values to verify: whether each matched.
    pub(crate) verified: BTreeMap<String, bool>,
    /// Why the record after `records` could not be translated: the
    /// exchange fails unless the consumer's limit is reached first.
    pub(crate) failed: Option<String>,
}

impl Admit {
    pub(crate) fn new(allowed: &Allowed) -> Self {
        Self {
            columns: allowed.fetch.columns.clone(),
            shape: allowed.shape.clone(),
            translation: allowed.translation.as_ref().map(|t| Translate {
                translator: t.translator.clone(),
                residual: t.residual.clone(),
                fields: t.fields.clone(),
            }),
        }
    }

    /// Whether delivered records differ from what the adapter sent.
    fn changes_records(&self) -> bool {
        self.translation.is_some() || self.shape.is_some()
    }

    /// Admits one batch; `first` is the number of its first record in the
    /// exchange, counted from 1, for error messages. `Err` when the
    /// adapter sent something it must not: the exchange fails.
    pub(crate) fn batch(&self, records: Vec<String>, first: u64) -> Result<Admitted, String> {
        let mut admitted = Admitted::default();
        if !self.changes_records() {
            // nothing changes: only the keys are read
            for record in &records {
                self.check_record(record)?;
            }
            admitted.records = records;
            return Ok(admitted);
        }
        let mut out = Vec::with_capacity(records.len());
        for (i, text) in records.iter().enumerate() {
            let mut record = self.parse_record(text)?;
            if let Some(shape) = &self.shape {
                shape_record(&mut record, shape, &mut admitted.verified);
            }
            let Some(t) = &self.translation else {
                out.push(Value::Object(record).to_string());
                continue;
            };
            match t
                .translator
                .translate(record, t.residual.as_ref(), &t.fields)
            {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => {
                    admitted.failed = Some(format!("record {}: {e}", first + i as u64));
                    break;
                }
            }
        }
        admitted.records = out;
        Ok(admitted)
    }

    /// One record from the adapter must be a JSON object of granted fields.
    fn check_record(&self, record: &str) -> Result<(), String> {
        check_size(record)?;
        // only the keys matter here
        let keys = jembatan_core::record::record_keys(record)
            .map_err(|e| format!("adapter sent a record that is not a JSON object: {e}"))?;
        self.check_keys(keys.into_iter())
    }

    /// The same checks as [`check_record`](Self::check_record), keeping
    /// the parsed object.
    fn parse_record(&self, record: &str) -> Result<Map<String, Value>, String> {
        check_size(record)?;
        let map = jembatan_core::record::parse_record(record)
            .map_err(|e| format!("adapter sent a record that is not a JSON object: {e}"))?;
        self.check_keys(map.keys().map(String::as_str))?;
        Ok(map)
    }

    /// Every key must be a column the exchange fetched (the grant).
    fn check_keys<'a>(&self, mut keys: impl Iterator<Item = &'a str>) -> Result<(), String> {
        match keys.find(|k| !self.columns.iter().any(|c| c == k)) {
            Some(extra) => Err(format!(
                "adapter sent field {:?} outside the grant",
                jembatan_core::ids::truncate(extra, 64)
            )),
            None => Ok(()),
        }
    }
}

fn check_size(record: &str) -> Result<(), String> {
    if record.len() > MAX_RECORD_BYTES {
        return Err(format!("adapter sent a record of {} bytes", record.len()));
    }
    Ok(())
}

/// Masks a record's masked fields, compares the values to verify, and
/// drops the fields fetched only for verifying.
fn shape_record(
    record: &mut Map<String, Value>,
    shape: &Shape,
    verified: &mut BTreeMap<String, bool>,
) {
    for (field, rule) in &shape.masks {
        if let Some(v) = record.get_mut(field) {
            *v = rule.apply(v);
        }
    }
    for (field, want) in &shape.verify {
        let matched = record.get(field).is_some_and(|v| {
            jembatan_core::filter::compare(v, want) == Some(std::cmp::Ordering::Equal)
        });
        verified.insert(field.clone(), matched);
    }
    for field in &shape.drop {
        record.remove(field);
    }
}

/// Threads that admit batches for running queries: at most one per core
/// at a time, whatever the number of exchanges, so admitting never
/// crowds out the runtime that moves the bytes.
#[derive(Debug)]
pub(crate) struct Workers {
    slots: Arc<Semaphore>,
}

/// A batch handed to [`Workers::admit`].
pub(crate) enum Pending {
    /// Admitted already (taken once).
    Done(Option<Result<Admitted, String>>),
    /// Being admitted on a worker thread.
    Running(JoinHandle<Result<Admitted, String>>),
}

impl Pending {
    /// The batch's outcome, once it is there.
    pub(crate) async fn outcome(&mut self) -> Result<Admitted, String> {
        match self {
            Pending::Done(done) => done
                .take()
                .unwrap_or_else(|| Err("a batch was taken twice".to_owned())),
            Pending::Running(handle) => handle
                .await
                .map_err(|e| format!("admitting a batch failed: {e}"))?,
        }
    }

    /// Stops a batch no longer wanted from waiting for a worker.
    pub(crate) fn abort(&self) {
        if let Pending::Running(handle) = self {
            handle.abort();
        }
    }
}

impl Workers {
    pub(crate) fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            slots: Arc::new(Semaphore::new(cores)),
        }
    }

    /// Starts admitting `records` on a worker thread. Records that are
    /// delivered as they came only have their keys read: that is done at
    /// once, on the caller's thread, where the records already are.
    pub(crate) fn admit(&self, admit: &Arc<Admit>, records: Vec<String>, first: u64) -> Pending {
        if !admit.changes_records() {
            return Pending::Done(Some(admit.batch(records, first)));
        }
        let slots = self.slots.clone();
        let admit = admit.clone();
        Pending::Running(tokio::spawn(async move {
            let _slot = slots
                .acquire_owned()
                .await
                .map_err(|_| "the broker is shutting down".to_owned())?;
            tokio::task::spawn_blocking(move || admit.batch(records, first))
                .await
                .map_err(|e| format!("admitting a batch failed: {e}"))?
        }))
    }
}
