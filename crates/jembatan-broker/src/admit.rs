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

use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use jembatan_core::record::{ReadError, RecordReader};
use jembatan_core::{Filter, MaskRule, Scalar};

use crate::error::{BadRecord, Cause};
use crate::registry::{CheckFailure, Translator};

/// Most bytes of one record the broker accepts from an adapter.
const MAX_RECORD_BYTES: usize = 1 << 20;

/// What the broker changes in each record before it leaves: masked
/// fields, and fields fetched only to verify a consumer's value, which are
/// compared and dropped.
#[derive(Debug)]
pub(crate) struct Shape {
    pub(crate) masks: Vec<(String, MaskRule)>,
    pub(crate) verify: Vec<(String, Scalar)>,
    /// Fetched fields that are not delivered.
    pub(crate) drop: Vec<String>,
}

/// A translated exchange: the translator, the part of the consumer's
/// filter that could not be pushed to the adapter, the consumer's fields
/// (target names) and its record limit.
#[derive(Debug)]
pub(crate) struct Translation {
    pub(crate) translator: Arc<Translator>,
    pub(crate) residual: Option<Filter>,
    pub(crate) fields: Vec<String>,
    /// Most records to deliver; 0 means no limit.
    pub(crate) limit: u64,
}

/// The per-record work of one exchange, shared with the worker threads.
#[derive(Debug)]
pub(crate) struct Admit {
    /// The columns the adapter was asked for: the only keys a record may hold.
    columns: Vec<String>,
    shape: Option<Shape>,
    translation: Option<Translation>,
}

/// One batch of a mapping test, checked: how many records passed, and
/// the first that failed (its number in the exchange, from 1).
#[derive(Debug, Default)]
pub(crate) struct Tested {
    pub(crate) checked: u64,
    pub(crate) passed: u64,
    pub(crate) first_failure: Option<(u64, CheckFailure)>,
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
    pub(crate) failed: Option<BadRecord>,
}

impl Admit {
    pub(crate) fn new(
        columns: Vec<String>,
        shape: Option<Shape>,
        translation: Option<Translation>,
    ) -> Self {
        Self {
            columns,
            shape,
            translation,
        }
    }

    /// Whether delivered records differ from what the adapter sent:
    /// translated, masked or with verified fields dropped.
    pub(crate) fn changes_records(&self) -> bool {
        self.translation.is_some() || self.shape.is_some()
    }

    /// Whether `field` reaches the consumer as the adapter sends it: in
    /// the provider's schema, fetched, neither masked nor dropped.
    pub(crate) fn passes_unchanged(&self, field: &str) -> bool {
        self.translation.is_none()
            && self.columns.iter().any(|c| c == field)
            && self.shape.as_ref().is_none_or(|s| {
                !s.masks.iter().any(|(f, _)| f == field) && !s.drop.iter().any(|f| f == field)
            })
    }

    /// The translator of a translated exchange.
    pub(crate) fn translator(&self) -> Option<&Arc<Translator>> {
        self.translation.as_ref().map(|t| &t.translator)
    }

    /// Checks one batch of a mapping test: each record is checked against
    /// the grant as any exchange's (`Err` when the adapter sent something
    /// it must not: the test fails), shaped, and run through the
    /// translator's checks. Nothing of the records is kept.
    pub(crate) fn test(&self, records: Vec<String>, first: u64) -> Result<Tested, BadRecord> {
        let mut tested = Tested::default();
        let Some(t) = &self.translation else {
            return Ok(tested);
        };
        let mut reader = self.reader();
        for (i, text) in records.iter().enumerate() {
            let record = read_record(&mut reader, text)?;
            if let Some(shape) = &self.shape {
                shape_record(record, shape, &mut BTreeMap::new());
            }
            tested.checked += 1;
            match t.translator.check(record) {
                Ok(()) => tested.passed += 1,
                Err(failure) => {
                    if tested.first_failure.is_none() {
                        tested.first_failure = Some((first + i as u64, failure));
                    }
                }
            }
        }
        Ok(tested)
    }

    /// Most records a translated exchange delivers; 0 means no limit.
    pub(crate) fn limit(&self) -> u64 {
        self.translation.as_ref().map_or(0, |t| t.limit)
    }

    /// Admits one batch; `first` is the number of its first record in the
    /// exchange, counted from 1, for error messages. `Err` when the
    /// adapter sent something it must not: the exchange fails.
    pub(crate) fn batch(&self, records: Vec<String>, first: u64) -> Result<Admitted, BadRecord> {
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
        // one object for the batch's records, read over each other
        let mut reader = self.reader();
        for (i, text) in records.iter().enumerate() {
            let record = read_record(&mut reader, text)?;
            if let Some(shape) = &self.shape {
                shape_record(record, shape, &mut admitted.verified);
            }
            let Some(t) = &self.translation else {
                // the text `Value`'s `Display` writes
                out.push(serde_json::to_string(&*record).unwrap_or_default());
                continue;
            };
            match t
                .translator
                .translate(record, t.residual.as_ref(), &t.fields)
            {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => {
                    admitted.failed = Some(BadRecord::Untranslatable {
                        record: first + i as u64,
                        source: e,
                    });
                    break;
                }
            }
        }
        admitted.records = out;
        Ok(admitted)
    }

    /// One record from the adapter must be a JSON object of granted fields.
    fn check_record(&self, record: &str) -> Result<(), BadRecord> {
        check_size(record)?;
        // only the keys matter here
        match jembatan_core::record::key_outside(record, &self.columns) {
            Ok(None) => Ok(()),
            Ok(Some(extra)) => Err(BadRecord::OutsideGrant(
                jembatan_core::ids::truncate(extra, 64).to_owned(),
            )),
            Err(e) => Err(BadRecord::NotAnObject(e.to_string())),
        }
    }

    /// A reader of this exchange's records: JSON objects of granted
    /// fields, read with [`read_record`].
    pub(crate) fn reader(&self) -> RecordReader {
        RecordReader::new(&self.columns)
    }
}

/// Reads one record from the adapter, which must be a JSON object of
/// granted fields, into `reader`'s object.
pub(crate) fn read_record<'r>(
    reader: &'r mut RecordReader,
    text: &str,
) -> Result<&'r mut Map<String, Value>, BadRecord> {
    check_size(text)?;
    reader.read(text).map_err(|e| match e {
        ReadError::NotAnObject(e) => BadRecord::NotAnObject(e.to_string()),
        ReadError::Outside(key) => {
            BadRecord::OutsideGrant(jembatan_core::ids::truncate(&key, 64).to_owned())
        }
    })
}

fn check_size(record: &str) -> Result<(), BadRecord> {
    if record.len() > MAX_RECORD_BYTES {
        return Err(BadRecord::TooLarge(record.len()));
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

/// A batch being admitted on a worker thread. The outer `Err` is the
/// broker's own failure (the worker could not run), not the adapter's.
pub(crate) type Pending = JoinHandle<Result<Result<Admitted, BadRecord>, Cause>>;

impl Workers {
    pub(crate) fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            slots: Arc::new(Semaphore::new(cores)),
        }
    }

    /// Runs `work` on a worker thread, when one is free.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Cause> {
        // the semaphore is never closed
        let _slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(Cause::from)?;
        tokio::task::spawn_blocking(work).await.map_err(Cause::from)
    }

    /// Starts admitting `records` on a worker thread.
    pub(crate) fn admit(&self, admit: &Arc<Admit>, records: Vec<String>, first: u64) -> Pending {
        let slots = self.slots.clone();
        let admit = admit.clone();
        tokio::spawn(async move {
            // the semaphore is never closed
            let _slot = slots.acquire_owned().await.map_err(Cause::from)?;
            tokio::task::spawn_blocking(move || admit.batch(records, first))
                .await
                .map_err(Cause::from)
        })
    }
}
