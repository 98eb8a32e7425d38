//! The adapter itself: the whitelist checked against the live schema, and
//! the Describe / Fetch / Acknowledge operations behind the gRPC service.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jembatan_core::PayloadHasher;
use jembatan_core::ids::truncate;
use jembatan_core::limits::{MAX_FIELDS, MAX_IDENT_BYTES};
use jembatan_core::{AgencyId, DatasetId, FieldName, Filter, ServiceError};
use jembatan_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::config::AdapterConfig;
use crate::db::{self, ColumnType, Db, OutColumn, QueryTime};
use crate::error::{AdapterError, FetchStopped, Refused};
use crate::kind::ColumnKind;
use crate::logical::{self, Feed, ReaderHandle, Target};
use crate::receipts::{
    self, AckedReceipt, FetchStatus, LogEntry, ReceiptEntry, ReceiptLog, ServedEntry,
};
use crate::sql::{self, ColRef, Cond, Dialect, Select};
use crate::typed::typed_filter;

mod changes;
mod read_ahead;

pub(crate) use changes::ChangeInfo;
pub use changes::ChangesStream;

/// Statements of a many-part fetch run at once (each on its own
/// connection, the second only when a bulk connection is free for it).
const PARTS_AT_ONCE: usize = 2;

/// Most records in one batch, whatever the request asks.
pub const MAX_BATCH_SIZE: u32 = 10_000;
/// A batch is closed early once its records exceed this many bytes.
pub const MAX_BATCH_BYTES: usize = 1 << 20;
/// Most receipts one `AcknowledgeBatch` call may carry.
pub const MAX_RECEIPTS_PER_BATCH: usize = 1024;
/// Batches buffered between the database cursor and the gRPC stream; a
/// slow broker fills them and the cursor waits.
const CHANNEL_CAPACITY: usize = 4;
/// A fetch of at most this many rows (a lookup: the broker asks for 2, to
/// see a key that matches twice) may use the connections kept from bulk
/// fetches.
const SHORT_FETCH_ROWS: u64 = 2;
/// Longest request string (exchange id, consumer, purpose) the receipt log keeps.
const MAX_LOGGED_STRING: usize = 256;
/// Longest dataset id: two identifiers and the dot between them.
const MAX_DATASET_ID_BYTES: usize = 2 * MAX_IDENT_BYTES + 1;

/// The stream of batches a fetch returns.
pub type FetchStream = ReceiverStream<Result<pb::FetchResponse, Status>>;

/// An exposed column as the live database describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnInfo {
    pub name: String,
    pub kind: ColumnKind,
    /// The database's own type name.
    pub db_type: String,
    pub nullable: bool,
    pub(crate) ty: ColumnType,
}

/// A whitelisted dataset, checked against the live schema.
#[derive(Debug, Clone)]
pub struct DatasetInfo {
    pub id: DatasetId,
    pub schema: Option<String>,
    pub table: String,
    pub key: Option<FieldName>,
    /// Exposed columns in configuration order.
    pub columns: Vec<ColumnInfo>,
    row_filter: Option<Cond>,
    /// The change source, when the config declares one.
    changes: Option<ChangeInfo>,
}

impl DatasetInfo {
    fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }

    fn describe(&self) -> pb::DatasetDescription {
        pb::DatasetDescription {
            dataset: self.id.to_string(),
            columns: self
                .columns
                .iter()
                .map(|c| pb::ColumnDescription {
                    name: c.name.clone(),
                    kind: c.kind.to_proto() as i32,
                    db_type: c.db_type.clone(),
                    nullable: c.nullable,
                })
                .collect(),
            key_column: self.key.as_ref().map(|k| k.to_string()).unwrap_or_default(),
            changes: self.changes.as_ref().map(ChangeInfo::describe),
        }
    }
}

/// An adapter connected to its database, with a verified whitelist.
#[derive(Debug)]
pub struct Adapter {
    agency: AgencyId,
    db: Db,
    datasets: Vec<Arc<DatasetInfo>>,
    batch_size: u32,
    max_query_time: Duration,
    /// Connections bulk fetches may hold at once: the pool but a quarter
    /// (at least one), kept for lookups; `None` with a pool of one.
    bulk: Option<Arc<tokio::sync::Semaphore>>,
    log: ReceiptLog,
    /// The logical replication slots' readers, stopped when the adapter
    /// is dropped, and their journals.
    feeds: Vec<(Arc<Feed>, ReaderHandle)>,
    /// Pages of catch-ups read ahead of their polls.
    ahead: read_ahead::ReadAhead,
}

/// Connections of a pool of `max_connections` that bulk fetches may hold:
/// all but a quarter, and at least one kept for lookups, when there are
/// two or more.
pub(crate) fn bulk_connections(max_connections: u32) -> Option<usize> {
    let pool = usize::try_from(max_connections).unwrap_or(usize::MAX);
    (pool >= 2).then(|| pool - pool.div_ceil(4))
}

fn table_label(schema: Option<&str>, table: &str) -> String {
    match schema {
        Some(s) => format!("{s:?}.{table:?}"),
        None => format!("{table:?}"),
    }
}

impl Adapter {
    /// Opens the database, checks every whitelisted table and column
    /// against the live schema (refusing to start with one message naming
    /// every problem) and opens the receipt log.
    pub async fn connect(config: &AdapterConfig) -> Result<Adapter, AdapterError> {
        let db = Db::open(
            &config.database,
            &config.database_tls,
            config.max_query_time,
            config.max_connections,
        )
        .await?;
        match Self::check(&db, config).await {
            Ok((datasets, slots)) => {
                let log = match ReceiptLog::open(&config.receipt_log).await {
                    Ok(log) => log,
                    Err(e) => {
                        db.close().await;
                        return Err(e);
                    }
                };
                let mut feeds = Vec::with_capacity(slots.len());
                for feed in slots.into_values() {
                    let started = match db.postgres() {
                        Some(pool) => feed.start(pool.clone()).await,
                        None => Err(AdapterError::Whitelist(
                            "logical replication needs PostgreSQL".into(),
                        )),
                    };
                    match started {
                        Ok(handle) => feeds.push((feed, handle)),
                        Err(e) => {
                            db.close().await;
                            return Err(e);
                        }
                    }
                }
                tracing::info!(
                    agency = %config.agency,
                    datasets = datasets.len(),
                    backend = config.backend().as_str(),
                    "adapter whitelist matches the database"
                );
                Ok(Adapter {
                    agency: config.agency.clone(),
                    db,
                    datasets,
                    batch_size: config.batch_size,
                    max_query_time: config.max_query_time,
                    bulk: bulk_connections(config.max_connections)
                        .map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
                    log,
                    feeds,
                    ahead: read_ahead::ReadAhead::default(),
                })
            }
            Err(e) => {
                db.close().await;
                Err(e)
            }
        }
    }

    /// The datasets, and the slot readers of logical sources (not yet
    /// started), by slot.
    async fn check(
        db: &Db,
        config: &AdapterConfig,
    ) -> Result<(Vec<Arc<DatasetInfo>>, HashMap<String, Arc<Feed>>), AdapterError> {
        let dialect = db.dialect();
        let mut problems = Vec::new();
        let mut datasets = Vec::new();
        let mut feeds: HashMap<String, Arc<Feed>> = HashMap::new();
        for d in &config.datasets {
            let id = d.id(&config.agency).map_err(|e| AdapterError::Config {
                origin: "adapter config".into(),
                message: e.to_string(),
            })?;
            let live = db::table_columns(db, d.schema.as_deref(), &d.table).await?;
            let table = table_label(d.schema.as_deref(), &d.table);
            if live.is_empty() {
                let hidden = db::unreadable(db, d.schema.as_deref(), &d.table).await?;
                problems.push(match (hidden.table, dialect) {
                    (Some(why), _) => format!(
                        "dataset {}: table {table} exists but cannot be read: {why}",
                        d.name
                    ),
                    (None, Dialect::MySql) => format!(
                        "dataset {}: no table {table}, or this database user has no SELECT \
                         privilege on it (MariaDB and MySQL do not tell the two apart)",
                        d.name
                    ),
                    (None, _) => format!("dataset {}: no table {table}", d.name),
                });
                continue;
            }
            let live: HashMap<&str, &db::TableColumn> =
                live.iter().map(|c| (c.name.as_str(), c)).collect();
            let mut needed: Vec<&str> = d.columns.iter().map(FieldName::as_str).collect();
            let change_filter = d.changes.as_ref().and_then(|c| c.deleted.as_ref());
            for f in [d.row_filter.as_ref(), change_filter].into_iter().flatten() {
                for field in f.fields() {
                    if !needed.contains(&field.as_str()) {
                        needed.push(field.as_str());
                    }
                }
            }
            if let Some(column) = d.changes.as_ref().and_then(|c| c.column.as_ref())
                && !needed.contains(&column.as_str())
            {
                needed.push(column.as_str());
            }
            let before = problems.len();
            let hidden = if needed.iter().any(|n| !live.contains_key(n)) {
                db::unreadable(db, d.schema.as_deref(), &d.table)
                    .await?
                    .columns
            } else {
                Vec::new()
            };
            for name in &needed {
                match live.get(name) {
                    None if hidden.iter().any(|h| h == name) => problems.push(format!(
                        "dataset {}: column {name:?} of table {table} cannot be read: \
                         this database role has no SELECT privilege on it",
                        d.name
                    )),
                    None => problems.push(format!(
                        "dataset {}: table {table} has no column {name:?}",
                        d.name
                    )),
                    Some(c) if c.mapping.is_none() => problems.push(format!(
                        "dataset {}: column {name:?} of table {table} has type {}, which the adapter cannot serve",
                        d.name, c.db_type
                    )),
                    Some(_) => {}
                }
            }
            if problems.len() > before {
                continue;
            }
            let types: HashMap<&str, ColumnType> = live
                .iter()
                .filter_map(|(n, c)| Some((*n, c.mapping?)))
                .collect();
            let row_filter = match &d.row_filter {
                None => None,
                Some(f) => match typed_filter(f, dialect, &|n| types.get(n).copied()) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        problems.push(format!("dataset {}: row_filter: {}", d.name, e.message));
                        continue;
                    }
                },
            };
            let feed = match (&d.changes, db.postgres()) {
                (Some(c), Some(pool)) if c.logical.is_some() => {
                    match Self::logical_feed(pool, d, c, &id, &types, &mut feeds).await? {
                        Ok(feed) => Some(feed),
                        Err(found) => {
                            problems.extend(
                                found
                                    .into_iter()
                                    .map(|m| format!("dataset {}: changes: {m}", d.name)),
                            );
                            continue;
                        }
                    }
                }
                _ => None,
            };
            let changes = match &d.changes {
                None => None,
                Some(c) => match ChangeInfo::check(d, c, &live, &types, dialect, feed) {
                    Ok(info) => Some(info),
                    Err(found) => {
                        problems.extend(
                            found
                                .into_iter()
                                .map(|m| format!("dataset {}: changes: {m}", d.name)),
                        );
                        continue;
                    }
                },
            };
            let columns = d
                .columns
                .iter()
                .filter_map(|name| {
                    let c = live.get(name.as_str())?;
                    let ty = c.mapping?;
                    Some(ColumnInfo {
                        name: c.name.clone(),
                        kind: ty.kind,
                        db_type: c.db_type.clone(),
                        nullable: c.nullable,
                        ty,
                    })
                })
                .collect();
            datasets.push(Arc::new(DatasetInfo {
                id,
                schema: d.schema.clone(),
                table: d.table.clone(),
                key: d.key.clone(),
                columns,
                row_filter,
                changes,
            }));
        }
        if problems.is_empty() {
            Ok((datasets, feeds))
        } else {
            for feed in feeds.values() {
                feed.journal.close().await;
            }
            Err(AdapterError::Whitelist(problems.join("; ")))
        }
    }

    /// Checks a dataset's logical replication source against the live
    /// database and adds the dataset to its slot's reader (opening the
    /// slot's journal for the first dataset on it). The inner error holds
    /// the problems, in words.
    async fn logical_feed(
        pool: &sqlx::PgPool,
        d: &crate::config::DatasetConfig,
        c: &crate::config::ChangesConfig,
        id: &DatasetId,
        types: &HashMap<&str, ColumnType>,
        feeds: &mut HashMap<String, Arc<Feed>>,
    ) -> Result<Result<Arc<Feed>, Vec<String>>, AdapterError> {
        let (Some(logical), Some(journal)) = (&c.logical, &c.journal) else {
            return Ok(Err(vec![
                "a logical source needs its slot and journal".into(),
            ]));
        };
        let key = c
            .key
            .as_ref()
            .or(d.key.as_ref())
            .map(|k| k.as_str())
            .unwrap_or_default();
        let db_err = |source| AdapterError::Database {
            context: format!(
                "checking the logical replication source of dataset {}",
                d.name
            ),
            source,
        };
        let problems = logical::check(pool, logical, d.schema.as_deref(), &d.table, key)
            .await
            .map_err(db_err)?;
        if !problems.is_empty() {
            return Ok(Err(problems));
        }
        let schema: String = match &d.schema {
            Some(s) => s.clone(),
            None => sqlx::query_scalar("SELECT current_schema()::text")
                .fetch_one(pool)
                .await
                .map_err(db_err)?,
        };
        let feed = match feeds.get(&logical.slot) {
            Some(feed) => Arc::clone(feed),
            None => {
                let feed = Arc::new(Feed::open(logical, journal, c.retain()).await?);
                feeds.insert(logical.slot.clone(), Arc::clone(&feed));
                feed
            }
        };
        feed.add_target(Target {
            dataset: id.to_string(),
            schema,
            table: d.table.clone(),
            key: key.to_owned(),
            integer: types
                .get(key)
                .is_some_and(|t| t.kind == ColumnKind::Integer),
        });
        Ok(Ok(feed))
    }

    pub fn agency(&self) -> &AgencyId {
        &self.agency
    }

    /// The whitelisted datasets, in configuration order.
    pub fn datasets(&self) -> impl Iterator<Item = &DatasetInfo> {
        self.datasets.iter().map(|d| d.as_ref())
    }

    /// Where this adapter appends its receipt log (see
    /// [`crate::read_receipt_log`]).
    pub fn receipt_log_path(&self) -> &Path {
        self.log.path()
    }

    /// Whether the database answers a trivial query.
    pub async fn check_database(&self) -> Result<(), AdapterError> {
        self.db
            .ping()
            .await
            .map_err(|source| AdapterError::Database {
                context: "checking the database".into(),
                source,
            })
    }

    /// Closes the database pool and the change journals (the slot
    /// readers stop when the adapter is dropped).
    pub async fn close(&self) {
        for (feed, reader) in &self.feeds {
            reader.stop();
            feed.journal.close().await;
        }
        self.db.close().await;
    }

    /// The datasets this adapter exposes.
    pub fn describe(&self) -> pb::DescribeResponse {
        pb::DescribeResponse {
            agency: self.agency.to_string(),
            datasets: self.datasets.iter().map(|d| d.describe()).collect(),
        }
    }

    fn dataset(&self, requested: &str) -> Result<&Arc<DatasetInfo>, Refused> {
        if requested.len() > MAX_DATASET_ID_BYTES {
            return Err(Refused::DatasetIdTooLong(requested.len()));
        }
        self.datasets
            .iter()
            .find(|d| d.id.as_str() == requested)
            .ok_or_else(|| Refused::DatasetNotWhitelisted {
                dataset: truncate(requested, 128).to_owned(),
                agency: self.agency.to_string(),
            })
    }

    /// Checks a fetch request against the whitelist and renders its SQL.
    fn plan(&self, req: &pb::FetchRequest) -> Result<Plan, Refused> {
        let dataset = self.dataset(&req.dataset)?.clone();
        check_columns(&dataset, &req.columns)?;
        if req.parts.len() > jembatan_core::limits::MAX_FETCH_PARTS {
            return Err(Refused::TooManyParts(req.parts.len()));
        }
        // the broker's filter: the agreement's row filter, the consumer's
        // filter and a lookup key under one `all`
        let filter = req
            .filter
            .as_ref()
            .map(Filter::from_forwarded_proto)
            .transpose()?;
        // one statement per part (many keys at once), else one
        let mut filters = Vec::with_capacity(req.parts.len().max(1));
        if req.parts.is_empty() {
            filters.push(filter);
        } else {
            for part in &req.parts {
                let part = Filter::from_forwarded_proto(part)?;
                filters.push(Filter::and(filter.iter().cloned().chain([part])));
            }
        }
        let dialect = self.db.dialect();
        let mut typed = Vec::with_capacity(filters.len());
        for filter in &filters {
            typed.push(match filter {
                None => None,
                Some(f) => Some(typed_request_filter(&dataset, f, dialect)?),
            });
        }
        let (cols, out) = out_columns(&dataset, &req.columns);
        let rendered = typed
            .iter()
            .map(|filter| {
                sql::render(
                    dialect,
                    &Select {
                        schema: dataset.schema.as_deref(),
                        table: &dataset.table,
                        columns: &cols,
                        row_filter: dataset.row_filter.as_ref(),
                        filter: filter.as_ref(),
                        order_by: dataset.key.as_ref().map(FieldName::as_str),
                        limit: (req.limit > 0).then_some(req.limit),
                    },
                )
            })
            .collect();
        let batch_size = match req.batch_size {
            0 => self.batch_size,
            n => n.min(MAX_BATCH_SIZE),
        } as usize;
        Ok(Plan {
            dataset,
            rendered,
            out: out.into(),
            batch_size,
        })
    }

    /// Streams the rows a fetch asks for, after checking it against the
    /// whitelist. The caller is responsible for authenticating the broker
    /// (the gRPC service does). When the stream ends, fails or is dropped,
    /// a `served` line is appended to the receipt log. The fetch may run
    /// for the adapter's `max_query_time`.
    pub fn fetch(self: &Arc<Self>, req: pb::FetchRequest) -> Result<FetchStream, Status> {
        self.fetch_within(req, None)
    }

    /// [`Adapter::fetch`] within the caller's deadline (`grpc-timeout`),
    /// when it is shorter than the adapter's `max_query_time`. A fetch past
    /// its deadline ends with `DeadlineExceeded` and its statement is
    /// stopped in the database.
    pub fn fetch_within(
        self: &Arc<Self>,
        req: pb::FetchRequest,
        timeout: Option<Duration>,
    ) -> Result<FetchStream, Status> {
        let limit = match timeout {
            Some(t) if t < self.max_query_time => TimeLimit::Caller(t),
            _ => TimeLimit::Config(self.max_query_time),
        };
        let plan = match self.plan(&req) {
            Ok(p) => p,
            Err(refused) => {
                tracing::warn!(
                    dataset = %truncate(&req.dataset, 128),
                    exchange_id = %truncate(&req.exchange_id, 64),
                    code = ?refused.code(),
                    reason = %refused,
                    "fetch refused"
                );
                return Err(refused.into());
            }
        };
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let adapter = Arc::clone(self);
        tokio::spawn(async move {
            let entry = adapter.produce(plan, limit, &req, tx).await;
            if let Err(e) = adapter.log.append(&LogEntry::Served(entry)).await {
                tracing::error!(path = %adapter.log.path().display(), error = %e, "cannot append to the receipt log");
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    async fn produce(
        &self,
        plan: Plan,
        limit: TimeLimit,
        req: &pb::FetchRequest,
        tx: mpsc::Sender<Result<pb::FetchResponse, Status>>,
    ) -> ServedEntry {
        let Plan {
            dataset,
            rendered,
            out,
            batch_size,
        } = plan;
        let started = Instant::now();
        let time = limit.query_time(started);
        let mut sent = Sent::default();
        let mut batch: Vec<String> = Vec::with_capacity(batch_size.min(1024));
        let mut batch_bytes = 0usize;
        let short = (1..=SHORT_FETCH_ROWS).contains(&req.limit);
        // `None`: the database stopped the statement at its deadline
        let read = async {
            // a bulk fetch waits for a bulk connection, so that lookups
            // never wait behind bulk fetches for one
            let _bulk = match &self.bulk {
                Some(bulk) if !short => tokio::select! {
                    biased;
                    _ = tx.closed() => return Some(FetchStatus::Cancelled),
                    permit = Arc::clone(bulk).acquire_owned() => permit.ok(),
                },
                _ => None,
            };
            // a fetch of many parts (a batch's keys) runs two statements
            // at once when a second bulk connection is free for it: one
            // part's rows are read whole while the next runs, in order
            let second = match &self.bulk {
                Some(bulk) if rendered.len() > 1 && !short => {
                    Arc::clone(bulk).try_acquire_owned().ok()
                }
                _ => None,
            };
            let statements = futures::stream::iter(rendered)
                .map(|statement| db::records(self.db.clone(), statement, out.clone(), time));
            let mut records = if second.is_some() {
                statements
                    .map(|rows| rows.collect::<Vec<_>>())
                    .buffered(PARTS_AT_ONCE)
                    .flat_map(futures::stream::iter)
                    .boxed()
            } else {
                statements.flatten().boxed()
            };
            loop {
                let next = tokio::select! {
                    biased;
                    _ = tx.closed() => return Some(FetchStatus::Cancelled),
                    next = records.next() => next,
                };
                match next {
                    Some(Ok(record)) => {
                        batch_bytes += record.len();
                        batch.push(record);
                        if batch.len() >= batch_size || batch_bytes >= MAX_BATCH_BYTES {
                            batch_bytes = 0;
                            if !sent.send(&tx, std::mem::take(&mut batch)).await {
                                return Some(FetchStatus::Cancelled);
                            }
                        }
                    }
                    Some(Err(e)) => {
                        // the database may stop a statement at its limit a
                        // moment before the adapter's own deadline fires
                        if Instant::now() + DEADLINE_TOLERANCE >= time.deadline {
                            return None;
                        }
                        tracing::error!(
                            dataset = %dataset.id,
                            exchange_id = %truncate(&req.exchange_id, 64),
                            error = %e,
                            "database error while reading dataset"
                        );
                        let status = FetchStopped::Database(dataset.id.clone()).into();
                        // the broker may already be gone; the log records the failure either way
                        let _ = tx.send(Err(status)).await;
                        return Some(FetchStatus::Failed);
                    }
                    None => {
                        if !batch.is_empty() && !sent.send(&tx, std::mem::take(&mut batch)).await {
                            return Some(FetchStatus::Cancelled);
                        }
                        return Some(FetchStatus::Ok);
                    }
                }
            }
        };
        let status = match tokio::time::timeout_at(time.deadline.into(), read).await {
            Ok(Some(status)) => status,
            Ok(None) | Err(_) => {
                let stopped = limit.exceeded(&dataset.id);
                tracing::warn!(
                    dataset = %dataset.id,
                    exchange_id = %truncate(&req.exchange_id, 64),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    reason = %stopped,
                    "fetch stopped at its deadline"
                );
                // the broker may already be gone; the log records the failure either way
                let _ = tx.send(Err(stopped.into())).await;
                FetchStatus::Failed
            }
        };
        tracing::info!(
            dataset = %dataset.id,
            exchange_id = %truncate(&req.exchange_id, 64),
            consumer = %truncate(&req.consumer, 64),
            rows = sent.rows,
            bytes = sent.bytes,
            status = ?status,
            "fetch finished"
        );
        sent.entry(
            &dataset.id,
            [&req.exchange_id, &req.consumer, &req.purpose],
            &req.columns,
            status,
        )
    }

    /// Records the broker's receipt for an exchange this adapter served.
    pub async fn acknowledge(
        &self,
        req: pb::AcknowledgeRequest,
    ) -> Result<pb::AcknowledgeResponse, Status> {
        let entry = self.receipt_entry(&req)?;
        self.append_receipts(&[entry]).await?;
        Ok(pb::AcknowledgeResponse {})
    }

    /// Records several receipts with one write and one sync, in order.
    /// A batch holding an invalid receipt is refused whole and nothing of
    /// it is written.
    pub async fn acknowledge_batch(
        &self,
        req: pb::AcknowledgeBatchRequest,
    ) -> Result<pb::AcknowledgeResponse, Status> {
        if req.receipts.len() > MAX_RECEIPTS_PER_BATCH {
            return Err(Refused::TooManyReceipts(req.receipts.len()).into());
        }
        let entries = req
            .receipts
            .iter()
            .enumerate()
            .map(|(index, r)| {
                self.receipt_entry(r).map_err(|e| Refused::InBatch {
                    index,
                    source: Box::new(e),
                })
            })
            .collect::<Result<Vec<_>, Refused>>()?;
        if !entries.is_empty() {
            self.append_receipts(&entries).await?;
        }
        Ok(pb::AcknowledgeResponse {})
    }

    /// The log entry of one acknowledged receipt.
    fn receipt_entry(&self, req: &pb::AcknowledgeRequest) -> Result<LogEntry, Refused> {
        let dataset = self.dataset(&req.dataset)?;
        let Some(receipt) = &req.receipt else {
            return Err(Refused::NoReceipt);
        };
        Ok(LogEntry::Receipt(ReceiptEntry {
            time: receipts::now(),
            dataset: dataset.id.to_string(),
            consumer: truncate(&req.consumer, MAX_LOGGED_STRING).to_owned(),
            receipt: AckedReceipt::from(receipt),
        }))
    }

    async fn append_receipts(&self, entries: &[LogEntry]) -> Result<(), Refused> {
        self.log
            .append_all(entries)
            .await
            .map_err(|e| Refused::ReceiptLog {
                path: self.log.path().to_owned(),
                message: e.to_string(),
            })?;
        for entry in entries {
            if let LogEntry::Receipt(r) = entry {
                tracing::info!(
                    dataset = %r.dataset,
                    exchange_id = %truncate(&r.receipt.exchange_id, 64),
                    "receipt recorded"
                );
            }
        }
        Ok(())
    }
}

/// Checks requested columns: at least one, within limits, each on the
/// dataset's whitelist, none twice.
fn check_columns(dataset: &DatasetInfo, columns: &[String]) -> Result<(), Refused> {
    if columns.is_empty() {
        return Err(Refused::NoColumns);
    }
    if columns.len() > MAX_FIELDS {
        return Err(Refused::TooManyColumns(columns.len()));
    }
    if let Some(long) = columns.iter().find(|c| c.len() > MAX_IDENT_BYTES) {
        return Err(Refused::ColumnNameTooLong(long.len()));
    }
    let off_list: BTreeSet<String> = columns
        .iter()
        .filter(|c| dataset.column(c).is_none())
        .map(|c| format!("{:?}", truncate(c, 64)))
        .collect();
    if !off_list.is_empty() {
        return Err(Refused::ColumnsNotWhitelisted {
            dataset: dataset.id.to_string(),
            columns: off_list.into_iter().collect::<Vec<_>>().join(", "),
        });
    }
    let mut seen = BTreeSet::new();
    for c in columns {
        if !seen.insert(c.as_str()) {
            return Err(Refused::DuplicateColumn(c.clone()));
        }
    }
    Ok(())
}

/// A request's filter typed against the dataset: every field it names
/// must be an exposed column.
fn typed_request_filter(
    dataset: &DatasetInfo,
    filter: &Filter,
    dialect: Dialect,
) -> Result<Cond, Refused> {
    let off_list: Vec<String> = filter
        .fields()
        .into_iter()
        .filter(|n| dataset.column(n.as_str()).is_none())
        .map(|n| format!("{:?}", n.as_str()))
        .collect();
    if !off_list.is_empty() {
        return Err(Refused::FilterNotWhitelisted {
            dataset: dataset.id.to_string(),
            fields: off_list.join(", "),
        });
    }
    Ok(typed_filter(filter, dialect, &|n| {
        dataset.column(n).map(|c| c.ty)
    })?)
}

/// The record columns of a request, as SQL reads them and as records
/// carry them.
fn out_columns(dataset: &DatasetInfo, columns: &[String]) -> (Vec<ColRef>, Vec<OutColumn>) {
    columns
        .iter()
        .filter_map(|name| dataset.column(name))
        .map(|c| {
            (
                ColRef {
                    name: c.name.clone(),
                    cast_to_text: c.ty.selected_as_text(),
                },
                OutColumn {
                    name: c.name.clone(),
                    decoder: c.ty.decoder,
                },
            )
        })
        .unzip()
}

/// A database error this close to the deadline counts as the deadline:
/// the database's own limit on the statement ends it at about that time.
const DEADLINE_TOLERANCE: Duration = Duration::from_millis(50);

/// Which limit bounds a fetch's time.
#[derive(Debug, Clone, Copy)]
enum TimeLimit {
    /// The caller's deadline (`grpc-timeout`), shorter than `max_query_time`.
    Caller(Duration),
    /// The adapter's `max_query_time`.
    Config(Duration),
}

impl TimeLimit {
    fn duration(self) -> Duration {
        match self {
            TimeLimit::Caller(d) | TimeLimit::Config(d) => d,
        }
    }

    /// The time of a fetch that started at `started` under this limit:
    /// a caller's deadline is also the statement's own limit.
    fn query_time(self, started: Instant) -> QueryTime {
        QueryTime {
            deadline: started + self.duration(),
            statement_limit: match self {
                TimeLimit::Caller(t) => Some(t),
                TimeLimit::Config(_) => None,
            },
        }
    }

    /// The message of the `DeadlineExceeded` a fetch past this limit ends with.
    fn exceeded(self, dataset: &DatasetId) -> FetchStopped {
        let dataset = dataset.clone();
        match self {
            TimeLimit::Caller(limit) => FetchStopped::CallerDeadline { dataset, limit },
            TimeLimit::Config(limit) => FetchStopped::ConfigDeadline { dataset, limit },
        }
    }
}

/// A checked fetch: the dataset, its SQL and how to read the rows.
struct Plan {
    dataset: Arc<DatasetInfo>,
    /// One statement, or one per part of the fetch, run in order.
    rendered: Vec<sql::Rendered>,
    out: Arc<[OutColumn]>,
    batch_size: usize,
}

/// What has been handed to the transport so far.
struct Sent {
    hasher: PayloadHasher,
    rows: u64,
    bytes: u64,
}

impl Default for Sent {
    fn default() -> Sent {
        Sent {
            hasher: PayloadHasher::new(),
            rows: 0,
            bytes: 0,
        }
    }
}

impl Sent {
    /// The receipt log's line for what was sent, now: `asked` is the
    /// request's exchange id, consumer and purpose, each cut to what the
    /// log keeps.
    fn entry(
        &self,
        dataset: &DatasetId,
        asked: [&str; 3],
        columns: &[String],
        status: FetchStatus,
    ) -> ServedEntry {
        let [exchange_id, consumer, purpose] = asked;
        ServedEntry {
            time: receipts::now(),
            exchange_id: truncate(exchange_id, MAX_LOGGED_STRING).to_owned(),
            dataset: dataset.to_string(),
            consumer: truncate(consumer, MAX_LOGGED_STRING).to_owned(),
            purpose: truncate(purpose, MAX_LOGGED_STRING).to_owned(),
            columns: columns.to_vec(),
            rows: self.rows,
            bytes: self.bytes,
            payload_sha256: self.hasher.hex(),
            status,
        }
    }

    /// Sends a batch; `false` when the receiver is gone (nothing counted).
    async fn send(
        &mut self,
        tx: &mpsc::Sender<Result<pb::FetchResponse, Status>>,
        records: Vec<String>,
    ) -> bool {
        let rows = records.len();
        let counted = self.count(records.iter().map(String::as_str));
        let batch = pb::FetchResponse {
            batch: Some(pb::RecordBatch { records }),
        };
        self.deliver(tx, batch, rows, counted).await
    }

    /// The payload hash and bytes once `texts` (record texts) are added.
    fn count<'a>(&self, texts: impl Iterator<Item = &'a str>) -> (PayloadHasher, u64) {
        let mut hasher = self.hasher.clone();
        let mut bytes = 0u64;
        for text in texts {
            hasher.update(text);
            bytes += text.len() as u64;
        }
        (hasher, bytes)
    }

    /// Sends `message` of `rows` rows, [`count`](Self::count)ed; `false`
    /// when the receiver is gone (nothing counted).
    async fn deliver<M>(
        &mut self,
        tx: &mpsc::Sender<Result<M, Status>>,
        message: M,
        rows: usize,
        (hasher, bytes): (PayloadHasher, u64),
    ) -> bool {
        if tx.send(Ok(message)).await.is_err() {
            return false;
        }
        self.hasher = hasher;
        self.rows += rows as u64;
        self.bytes += bytes;
        true
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_quarter_of_the_pool_is_kept_for_lookups() {
        let cases = [
            (1, None),
            (2, Some(1)),
            (3, Some(2)),
            (4, Some(3)),
            (8, Some(6)),
            (9, Some(6)),
            (16, Some(12)),
        ];
        for (pool, bulk) in cases {
            assert_eq!(super::bulk_connections(pool), bulk, "pool of {pool}");
        }
    }
}
