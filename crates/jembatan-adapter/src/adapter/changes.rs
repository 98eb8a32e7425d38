//! Change polls (`Adapter.Changes`): a dataset's changes after a position,
//! each marked deleted or not and in scope or not. From a polling source,
//! the rows after `(change column, key)` in that order: a keyset query, no
//! trigger, no write, no state in the agency's database. From a logical
//! replication source, the keys the journal holds after `(commit LSN,
//! key)`, each read as its row is now (a row that is gone is a delete),
//! after a first snapshot of the table in key order. Either way the caller
//! keeps the position.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use jembatan_core::ids::truncate;
use jembatan_core::{Filter, InvalidArgument, Scalar, ServiceError};
use jembatan_proto::v1 as pb;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::{
    Adapter, CHANNEL_CAPACITY, DEADLINE_TOLERANCE, DatasetInfo, MAX_BATCH_BYTES, MAX_BATCH_SIZE,
    Sent, TimeLimit, check_columns, out_columns, read_ahead, typed_request_filter,
};
use crate::config::{ChangesConfig, DEFAULT_CHANGE_LAG, DatasetConfig};
use crate::db::{
    self, ChangeReader, ChangeRow, ColumnType, Db, Decoder, QueryTime, RecordError, TableColumn,
};
use crate::error::{FetchStopped, Refused};
use crate::kind::ColumnKind;
use crate::logical::journal::JournalKey;
use crate::logical::{CatchUpError, Feed};
use crate::receipts::{FetchStatus, LogEntry, ServedEntry};
use crate::sql::{
    self, BindValue, ChangeSelect, ColRef, Cond, CurrentRows, CurrentSelect, Dialect, Horizon,
};
use crate::typed::{coerce, typed_filter};

/// The stream of change batches a poll returns.
pub type ChangesStream = ReceiverStream<Result<pb::ChangesResponse, Status>>;

/// Longest JSON text of one half of a position.
const MAX_POSITION_BYTES: usize = 1024;

/// A dataset's change source, checked against the live schema.
#[derive(Debug, Clone)]
pub(crate) struct ChangeInfo {
    key: ColRef,
    key_ty: ColumnType,
    poll_interval: Duration,
    source: Source,
}

/// Where a dataset's changes are read.
#[derive(Debug, Clone)]
enum Source {
    /// A monotonic change column, polled.
    Column {
        change: ColRef,
        change_ty: ColumnType,
        deleted: Option<Cond>,
        horizon: Option<Horizon>,
    },
    /// A logical replication slot consumed into the adapter's journal.
    Logical(Arc<Feed>),
}

impl ChangeInfo {
    /// Checks a dataset's `changes` against the live table: a unique
    /// non-null text or integer key, and for a polling source a timestamp
    /// or integer change column, a deletion filter on the table's columns
    /// and a lag window only for timestamps. A logical source comes with
    /// its slot's reader (`feed`), checked before. Problems are in words,
    /// for the start-up refusal.
    pub(crate) fn check(
        d: &DatasetConfig,
        changes: &ChangesConfig,
        live: &HashMap<&str, &TableColumn>,
        types: &HashMap<&str, ColumnType>,
        dialect: Dialect,
        feed: Option<Arc<Feed>>,
    ) -> Result<ChangeInfo, Vec<String>> {
        let mut problems = Vec::new();
        // the config check made sure one of the two is set
        let key_name = changes
            .key
            .as_ref()
            .or(d.key.as_ref())
            .map(|k| k.as_str())
            .unwrap_or_default();
        let key_ty = types.get(key_name).copied();
        match (key_ty, live.get(key_name)) {
            (Some(ty), Some(col)) => {
                if !matches!(ty.kind, ColumnKind::String | ColumnKind::Integer) {
                    problems.push(format!(
                        "change key {key_name:?} has type {}; a change key must be text or an integer",
                        col.db_type
                    ));
                }
                if col.nullable && !col.primary_key {
                    problems.push(format!(
                        "change key {key_name:?} may be NULL; a change key must be unique and \
                         not null (the primary key or a NOT NULL column with a unique index)"
                    ));
                }
            }
            _ => problems.push(format!(
                "change key {key_name:?} is not a column of the table"
            )),
        }
        let source = match (&changes.column, feed) {
            (_, Some(feed)) => Some(Source::Logical(feed)),
            (Some(column), None) => Self::check_column(
                changes,
                column.as_str(),
                live,
                types,
                dialect,
                &mut problems,
            ),
            (None, None) => {
                problems.push("no change column and no logical source".into());
                None
            }
        };
        match (source, key_ty) {
            (Some(source), Some(key_ty)) if problems.is_empty() => Ok(ChangeInfo {
                key: ColRef {
                    name: key_name.to_owned(),
                    cast_to_text: key_ty.selected_as_text(),
                },
                key_ty,
                poll_interval: changes.poll_interval(),
                source,
            }),
            _ => Err(problems),
        }
    }

    fn check_column(
        changes: &ChangesConfig,
        change_name: &str,
        live: &HashMap<&str, &TableColumn>,
        types: &HashMap<&str, ColumnType>,
        dialect: Dialect,
        problems: &mut Vec<String>,
    ) -> Option<Source> {
        let change_ty = types.get(change_name).copied();
        let horizon = match change_ty.map(|t| (t.kind, t.decoder)) {
            Some((ColumnKind::Integer, _)) => {
                if changes.lag.is_some() {
                    problems.push(format!(
                        "lag applies to timestamp change columns only; column {change_name:?} \
                         holds integers (versions are read as soon as they are committed)"
                    ));
                }
                None
            }
            Some((ColumnKind::DateTime, decoder)) => {
                let lag = changes.lag.unwrap_or(DEFAULT_CHANGE_LAG);
                Some(match decoder {
                    Decoder::DateTime => Horizon::Local(lag),
                    _ => Horizon::Zoned(lag),
                })
            }
            _ => {
                let db_type = live
                    .get(change_name)
                    .map(|c| c.db_type.as_str())
                    .unwrap_or("unknown");
                problems.push(format!(
                    "change column {change_name:?} has type {db_type}; a change column must be \
                     a timestamp or an increasing integer"
                ));
                None
            }
        };
        let deleted = match &changes.deleted {
            None => None,
            Some(f) => match typed_filter(f, dialect, &|n| types.get(n).copied()) {
                Ok(c) => Some(c),
                Err(e) => {
                    problems.push(format!("deleted: {}", e.message));
                    None
                }
            },
        };
        Some(Source::Column {
            change: ColRef {
                name: change_name.to_owned(),
                cast_to_text: change_ty?.selected_as_text(),
            },
            change_ty: change_ty?,
            deleted,
            horizon,
        })
    }

    /// The change source as `Describe` lists it.
    pub(crate) fn describe(&self) -> pb::ChangeSource {
        let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
        match &self.source {
            Source::Column {
                change,
                deleted,
                horizon,
                ..
            } => pb::ChangeSource {
                change_column: change.name.clone(),
                key_column: self.key.name.clone(),
                poll_interval_ms: ms(self.poll_interval),
                lag_ms: match horizon {
                    Some(Horizon::Zoned(lag) | Horizon::Local(lag)) => ms(*lag),
                    None => 0,
                },
                tombstones: deleted.is_some(),
                kind: pb::ChangeSourceKind::PollingColumn as i32,
            },
            Source::Logical(_) => pb::ChangeSource {
                change_column: String::new(),
                key_column: self.key.name.clone(),
                poll_interval_ms: ms(self.poll_interval),
                lag_ms: 0,
                tombstones: false,
                kind: pb::ChangeSourceKind::LogicalReplication as i32,
            },
        }
    }

    /// A polling position's two values, typed for the change column and
    /// the key.
    fn position(
        &self,
        change: &ColRef,
        change_ty: ColumnType,
        p: &pb::ChangePosition,
        dialect: Dialect,
    ) -> Result<(BindValue, BindValue), InvalidArgument> {
        Ok((
            position_value("change", &p.change, &change.name, change_ty, dialect)?,
            position_value("key", &p.key, &self.key.name, self.key_ty, dialect)?,
        ))
    }

    /// A logical source's position: where in the snapshot or the journal
    /// it stands, and its key typed for the key column.
    fn logical_position(
        &self,
        p: &pb::ChangePosition,
        dialect: Dialect,
    ) -> Result<(Stage, BindValue, JournalKey), InvalidArgument> {
        let bad = || {
            InvalidArgument::new(
                "after.change",
                "must be a commit LSN (a JSON integer) or a snapshot mark of this adapter",
            )
        };
        if p.change.len() > MAX_POSITION_BYTES {
            return Err(bad());
        }
        let stage = match serde_json::from_str::<Value>(&p.change) {
            Ok(Value::Number(n)) => Stage::Journal(n.as_u64().ok_or_else(bad)?),
            Ok(Value::String(s)) => Stage::Snapshot(
                s.strip_prefix(SNAPSHOT_MARK)
                    .and_then(|l| l.parse().ok())
                    .ok_or_else(bad)?,
            ),
            _ => return Err(bad()),
        };
        let key = position_value("key", &p.key, &self.key.name, self.key_ty, dialect)?;
        let journal_key = match &key {
            BindValue::Int(i) => JournalKey::Int(*i),
            _ => match serde_json::from_str::<Value>(&p.key) {
                Ok(Value::String(s)) => JournalKey::Text(s),
                Ok(Value::Number(n)) => JournalKey::Text(n.to_string()),
                _ => {
                    return Err(InvalidArgument::new(
                        "after.key",
                        "must be a string or an integer",
                    ));
                }
            },
        };
        Ok((stage, key, journal_key))
    }
}

/// The text before the journal LSN in a snapshot's change positions.
const SNAPSHOT_MARK: &str = "s:";

/// Where a logical source's poll starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// In the snapshot taken when the journal stood at this LSN.
    Snapshot(u64),
    /// In the journal, at this commit LSN.
    Journal(u64),
}

/// One half of a position: the JSON text of a string or an integer,
/// coerced to its column's type. Messages never quote the value.
fn position_value(
    half: &str,
    text: &str,
    column: &str,
    ty: ColumnType,
    dialect: Dialect,
) -> Result<BindValue, InvalidArgument> {
    let field = format!("after.{half}");
    if text.len() > MAX_POSITION_BYTES {
        return Err(InvalidArgument::new(
            &field,
            format!(
                "{} bytes exceed the limit of {MAX_POSITION_BYTES}",
                text.len()
            ),
        ));
    }
    let scalar = match serde_json::from_str::<Value>(text) {
        Ok(Value::String(s)) => Scalar::String(s),
        Ok(Value::Number(n)) if n.is_i64() => Scalar::Int(n.as_i64().unwrap_or_default()),
        _ => {
            return Err(InvalidArgument::new(
                &field,
                "must be the JSON text of a string or an integer",
            ));
        }
    };
    scalar
        .validate()
        .map_err(|e| InvalidArgument::new(&field, e.message))?;
    coerce(column, ty, &scalar, dialect).map_err(|e| InvalidArgument::new(&field, e.message))
}

/// A checked change poll.
struct ChangePlan {
    dataset: Arc<DatasetInfo>,
    rows: PlannedRows,
    batch_size: usize,
    /// Most changes the poll returns: a poll that returns this many
    /// leaves more behind it.
    page: u32,
}

/// How a poll's changes are read.
enum PlannedRows {
    /// One keyset query of a polling source.
    Poll {
        rendered: sql::Rendered,
        reader: ChangeReader,
    },
    /// A logical source's snapshot page or journal entries.
    Logical(LogicalPoll),
}

/// A poll of a logical source: where it starts, and how current rows are
/// read.
struct LogicalPoll {
    feed: Arc<Feed>,
    dataset: String,
    /// `None`: a new subscription, from the start of a snapshot.
    after: Option<(Stage, BindValue, JournalKey)>,
    limit: u32,
    schema: Option<String>,
    table: String,
    key: ColRef,
    key_ty: ColumnType,
    columns: Vec<ColRef>,
    scope: Vec<Cond>,
    reader: ChangeReader,
    dialect: Dialect,
}

type RowStream = Pin<Box<dyn Stream<Item = Result<ChangeRow, RecordError>> + Send>>;

impl LogicalPoll {
    fn gone(&self, why: String) -> RecordError {
        RecordError::Refused(Refused::PositionGone {
            dataset: self.dataset.clone(),
            why,
        })
    }

    fn select(&self, rows: CurrentRows) -> sql::Rendered {
        let scope: Vec<&Cond> = self.scope.iter().collect();
        sql::render_current(
            self.dialect,
            &CurrentSelect {
                schema: self.schema.as_deref(),
                table: &self.table,
                key: &self.key,
                columns: &self.columns,
                scope: &scope,
                rows,
            },
        )
    }

    /// The poll's changes: a page of the snapshot (marked with the
    /// journal LSN it started at), or once the snapshot is through, the
    /// journal's keys after the position, each read as its row is now.
    fn rows(self, db: Db, time: QueryTime) -> RowStream {
        Box::pin(async_stream::stream! {
            let (lsn, journal_key) = match &self.after {
                None => {
                    let lsn = self.feed.consumed();
                    for await row in self.snapshot(db.clone(), None, lsn, time) {
                        yield row;
                    }
                    return;
                }
                Some((Stage::Snapshot(lsn), key, _)) => {
                    if *lsn < self.feed.pruned() {
                        yield Err(self.gone(format!("the change journal no longer holds changes from LSN {lsn}")));
                        return;
                    }
                    let mut any = false;
                    for await row in self.snapshot(db.clone(), Some(key.clone()), *lsn, time) {
                        any = true;
                        yield row;
                    }
                    if any {
                        return;
                    }
                    (*lsn, None)
                }
                Some((Stage::Journal(lsn), _, key)) => (*lsn, Some(key.clone())),
            };
            if lsn < self.feed.pruned() {
                yield Err(self.gone(format!("the change journal no longer holds changes from LSN {lsn}")));
                return;
            }
            match self.feed.journal.truncated_after(&self.dataset, lsn).await {
                Ok(Some(at)) => {
                    yield Err(self.gone(format!("the table was truncated at LSN {at}")));
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    yield Err(e.into());
                    return;
                }
            }
            let entries = match self
                .feed
                .journal
                .after(&self.dataset, lsn, journal_key.as_ref(), self.limit)
                .await
            {
                Ok(entries) => entries,
                Err(e) => {
                    yield Err(e.into());
                    return;
                }
            };
            if entries.is_empty() {
                return;
            }
            let mut keys = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for e in &entries {
                if seen.insert(&e.key) {
                    let scalar = match &e.key {
                        JournalKey::Int(i) => Scalar::Int(*i),
                        JournalKey::Text(s) => Scalar::String(s.clone()),
                    };
                    match coerce(&self.key.name, self.key_ty, &scalar, self.dialect) {
                        Ok(b) => keys.push(b),
                        Err(e) => {
                            yield Err(RecordError::Value { column: self.key.name.clone(), message: e.message });
                            return;
                        }
                    }
                }
            }
            let mut current: HashMap<JournalKey, ChangeRow> = HashMap::with_capacity(keys.len());
            let select = self.select(CurrentRows::Keys(keys));
            for await row in db::rows(db, select, self.reader.clone(), time) {
                match row {
                    Ok(row) => {
                        if let Some(k) = JournalKey::from_json(&row.key) {
                            current.insert(k, row);
                        }
                    }
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                }
            }
            // a key read twice in one poll shows the same row twice: it
            // is sent once, at its last entry
            let mut last_of: HashMap<&JournalKey, usize> = HashMap::with_capacity(entries.len());
            for (i, e) in entries.iter().enumerate() {
                last_of.insert(&e.key, i);
            }
            let keep: Vec<bool> = entries
                .iter()
                .enumerate()
                .map(|(i, e)| last_of.get(&e.key) == Some(&i))
                .collect();
            drop(last_of);
            for (e, keep) in entries.into_iter().zip(keep) {
                if !keep {
                    continue;
                }
                let change = Value::from(e.lsn);
                yield Ok(match current.get(&e.key) {
                    Some(row) => ChangeRow {
                        change,
                        key: e.key.to_json(),
                        deleted: false,
                        in_scope: row.in_scope,
                        record: row.record.clone(),
                    },
                    None => ChangeRow {
                        change,
                        key: e.key.to_json(),
                        deleted: true,
                        in_scope: false,
                        record: None,
                    },
                });
            }
        })
    }

    /// One page of the snapshot after `key`, each row's change the
    /// snapshot's mark. Once the journal has caught up with what the
    /// page read, a row the journal holds a change of after the
    /// snapshot's LSN is left to the journal, which delivers it in its
    /// commit order: so each row comes once, from the snapshot or from
    /// the journal. When that is the page's last row, it still comes as
    /// its position alone (outside the scope: nothing reaches a consumer,
    /// which was never given a key past its snapshot position), so that
    /// the page moves the position on.
    fn snapshot(
        &self,
        db: Db,
        key: Option<BindValue>,
        lsn: u64,
        time: QueryTime,
    ) -> impl Stream<Item = Result<ChangeRow, RecordError>> + Send + 'static {
        let mark = Value::from(format!("{SNAPSHOT_MARK}{lsn}"));
        let select = self.select(CurrentRows::After(key, u64::from(self.limit)));
        let rows = db::rows(db.clone(), select, self.reader.clone(), time);
        let feed = Arc::clone(&self.feed);
        let dataset = self.dataset.clone();
        async_stream::stream! {
            let mut page = Vec::new();
            for await row in rows {
                match row {
                    Ok(mut row) => {
                        row.change = mark.clone();
                        page.push(row);
                    }
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                }
            }
            if page.is_empty() {
                return;
            }
            if let Some(pool) = db.postgres() {
                match feed.caught_up(pool).await {
                    Ok(()) => {}
                    Err(CatchUpError::Db(e)) => {
                        yield Err(e.into());
                        return;
                    }
                    // a reader catching up (after the adapter was stopped
                    // a while) is not a failure: the broker polls again
                    Err(CatchUpError::Behind(_)) => {
                        yield Err(RecordError::Refused(Refused::JournalBehind(dataset.clone())));
                        return;
                    }
                }
            }
            let keys: Vec<JournalKey> = page.iter().filter_map(|r| JournalKey::from_json(&r.key)).collect();
            let later = match feed.journal.changed_after(&dataset, lsn, &keys).await {
                Ok(later) => later,
                Err(e) => {
                    yield Err(e.into());
                    return;
                }
            };
            let n = page.len();
            for (i, mut row) in page.into_iter().enumerate() {
                let left_to_journal = JournalKey::from_json(&row.key).is_some_and(|k| later.contains(&k));
                if !left_to_journal {
                    yield Ok(row);
                } else if i + 1 == n {
                    row.in_scope = false;
                    row.record = None;
                    yield Ok(row);
                }
            }
        }
    }
}

impl Adapter {
    /// Checks a change poll against the whitelist and renders its SQL.
    fn plan_changes(&self, req: &pb::ChangesRequest) -> Result<ChangePlan, Refused> {
        let dataset = Arc::clone(self.dataset(&req.dataset)?);
        let Some(info) = &dataset.changes else {
            return Err(Refused::NoChangeSource(dataset.id.to_string()));
        };
        check_columns(&dataset, &req.columns)?;
        let dialect = self.db.dialect();
        let filter = req
            .filter
            .as_ref()
            .map(Filter::from_forwarded_proto)
            .transpose()?
            .map(|f| typed_request_filter(&dataset, &f, dialect))
            .transpose()?;
        let limit = match req.limit {
            0 => self.batch_size,
            n => n.min(MAX_BATCH_SIZE),
        };
        let (cols, out) = out_columns(&dataset, &req.columns);
        let rows = match &info.source {
            Source::Column {
                change,
                change_ty,
                deleted,
                horizon,
            } => {
                let after = req
                    .after
                    .as_ref()
                    .map(|p| info.position(change, *change_ty, p, dialect))
                    .transpose()?;
                let scope: Vec<&Cond> = [dataset.row_filter.as_ref(), filter.as_ref()]
                    .into_iter()
                    .flatten()
                    .collect();
                let rendered = sql::render_changes(
                    dialect,
                    &ChangeSelect {
                        schema: dataset.schema.as_deref(),
                        table: &dataset.table,
                        change,
                        key: &info.key,
                        columns: &cols,
                        deleted: deleted.as_ref(),
                        scope: &scope,
                        after,
                        horizon: *horizon,
                        limit: u64::from(limit),
                    },
                );
                let reader =
                    ChangeReader::new(dialect, change_ty.decoder, info.key_ty.decoder, out.into());
                PlannedRows::Poll { rendered, reader }
            }
            Source::Logical(feed) => {
                let after = req
                    .after
                    .as_ref()
                    .map(|p| info.logical_position(p, dialect))
                    .transpose()?;
                PlannedRows::Logical(LogicalPoll {
                    feed: Arc::clone(feed),
                    dataset: dataset.id.to_string(),
                    after,
                    limit,
                    schema: dataset.schema.clone(),
                    table: dataset.table.clone(),
                    key: info.key.clone(),
                    key_ty: info.key_ty,
                    columns: cols,
                    scope: [dataset.row_filter.clone(), filter]
                        .into_iter()
                        .flatten()
                        .collect(),
                    reader: ChangeReader::new(
                        dialect,
                        info.key_ty.decoder,
                        info.key_ty.decoder,
                        out.into(),
                    ),
                    dialect,
                })
            }
        };
        Ok(ChangePlan {
            dataset: Arc::clone(&dataset),
            rows,
            batch_size: self.batch_size as usize,
            page: limit,
        })
    }

    /// Streams the changes of a dataset after a position, in change
    /// order, at most the request's limit, after checking the request
    /// against the whitelist. A change of a row outside the request's
    /// filter or the dataset's row filter carries its position alone, and
    /// so does a deletion. Polls that return changes, fail or are
    /// cancelled are appended to the receipt log as `changes` lines. The
    /// caller's deadline (`timeout`) applies when shorter than the
    /// adapter's `max_query_time`.
    pub fn changes_within(
        self: &Arc<Self>,
        req: pb::ChangesRequest,
        timeout: Option<Duration>,
    ) -> Result<ChangesStream, Status> {
        if let Some(page) = self.ahead.claim(&req) {
            return Ok(self.serve_read_ahead(page));
        }
        let limit = match timeout {
            Some(t) if t < self.max_query_time => TimeLimit::Caller(t),
            _ => TimeLimit::Config(self.max_query_time),
        };
        let plan = match self.plan_changes(&req) {
            Ok(p) => p,
            Err(refused) => {
                tracing::warn!(
                    dataset = %truncate(&req.dataset, 128),
                    exchange_id = %truncate(&req.exchange_id, 64),
                    code = ?refused.code(),
                    reason = %refused,
                    "change poll refused"
                );
                return Err(refused.into());
            }
        };
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let adapter = Arc::clone(self);
        tokio::spawn(async move {
            let polled = adapter.produce_changes(plan, limit, &req, tx).await;
            if let Some(next) = polled.next {
                adapter.read_ahead(next);
            }
            adapter.log_changes(polled.entry).await;
        });
        Ok(ReceiverStream::new(rx))
    }

    /// Appends a poll's `changes` line to the receipt log, unless it
    /// found nothing and ended well.
    async fn log_changes(&self, entry: ServedEntry) {
        if entry.rows == 0 && entry.status == FetchStatus::Ok {
            return;
        }
        if let Err(e) = self.log.append(&LogEntry::Changes(entry)).await {
            tracing::error!(path = %self.log.path().display(), error = %e, "cannot append to the receipt log");
        }
    }

    /// Starts reading ahead the page `req` asks for (see
    /// [`read_ahead`](super::read_ahead)), if its plan still holds and a
    /// place is free. Only polling sources are read ahead (a logical
    /// source's pages wait on its journal), and only pages of at most
    /// [`read_ahead::MESSAGES`] batches.
    fn read_ahead(self: &Arc<Self>, req: pb::ChangesRequest) {
        let Ok(plan) = self.plan_changes(&req) else {
            return;
        };
        // a longer page would wait for its poll holding a connection
        let messages = (plan.page as usize).div_ceil(plan.batch_size.max(1));
        if !matches!(plan.rows, PlannedRows::Poll { .. }) || messages > read_ahead::MESSAGES {
            return;
        }
        let Some(reading) = self.ahead.register(req.clone()) else {
            return;
        };
        let adapter = Arc::clone(self);
        tokio::spawn(async move {
            let limit = TimeLimit::Config(adapter.max_query_time);
            let polled = adapter
                .produce_changes(plan, limit, &req, reading.messages)
                .await;
            if let Some(next) = polled.next.and_then(|next| reading.chain.full(next)) {
                adapter.read_ahead(next);
            }
            // the request that takes the page logs it; none may come
            let _ = reading.served.send(polled.entry);
        });
    }

    /// Serves a page read ahead to the request it waited for, then logs
    /// it as any poll: a page not sent whole is logged as cancelled.
    fn serve_read_ahead(self: &Arc<Self>, page: read_ahead::Claimed) -> ChangesStream {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let adapter = Arc::clone(self);
        let read_ahead::Claimed {
            mut messages,
            served,
            chain,
            slot,
        } = page;
        if let Some(next) = chain.asked() {
            self.read_ahead(next);
        }
        tokio::spawn(async move {
            let mut whole = true;
            while let Some(message) = messages.recv().await {
                if tx.send(message).await.is_err() {
                    whole = false;
                    break;
                }
            }
            // a reading still under way stops
            drop(messages);
            drop(slot);
            let Ok(mut entry) = served.await else {
                return;
            };
            if !whole {
                entry.status = FetchStatus::Cancelled;
            }
            adapter.log_changes(entry).await;
        });
        ReceiverStream::new(rx)
    }

    async fn produce_changes(
        &self,
        plan: ChangePlan,
        limit: TimeLimit,
        req: &pb::ChangesRequest,
        tx: mpsc::Sender<Result<pb::ChangesResponse, Status>>,
    ) -> Polled {
        let ChangePlan {
            dataset,
            rows,
            batch_size,
            page,
        } = plan;
        let started = Instant::now();
        let time = limit.query_time(started);
        let mut sent = Sent::default();
        let mut batch = Vec::new();
        let mut batch_bytes = 0usize;
        // the position of the last change sent
        let mut last = None;
        let read = async {
            let _bulk = match &self.bulk {
                Some(bulk) => tokio::select! {
                    biased;
                    _ = tx.closed() => return Some(FetchStatus::Cancelled),
                    permit = Arc::clone(bulk).acquire_owned() => permit.ok(),
                },
                None => None,
            };
            let mut rows: RowStream = match rows {
                PlannedRows::Poll { rendered, reader } => {
                    Box::pin(db::rows(self.db.clone(), rendered, reader, time))
                }
                PlannedRows::Logical(poll) => poll.rows(self.db.clone(), time),
            };
            loop {
                let next = tokio::select! {
                    biased;
                    _ = tx.closed() => return Some(FetchStatus::Cancelled),
                    next = rows.next() => next,
                };
                match next {
                    Some(Ok(row)) => {
                        let change = to_change(row);
                        batch_bytes += change.record.len() + 64;
                        batch.push(change);
                        if batch.len() >= batch_size || batch_bytes >= MAX_BATCH_BYTES {
                            batch_bytes = 0;
                            if !send_changes(&mut sent, &mut last, &tx, std::mem::take(&mut batch))
                                .await
                            {
                                return Some(FetchStatus::Cancelled);
                            }
                        }
                    }
                    Some(Err(RecordError::Refused(refused))) => {
                        tracing::warn!(
                            dataset = %dataset.id,
                            exchange_id = %truncate(&req.exchange_id, 64),
                            reason = %refused,
                            "change poll refused"
                        );
                        // the broker may already be gone; the log records the failure either way
                        let _ = tx.send(Err(refused.into())).await;
                        return Some(FetchStatus::Failed);
                    }
                    Some(Err(e)) => {
                        if Instant::now() + DEADLINE_TOLERANCE >= time.deadline {
                            return None;
                        }
                        tracing::error!(
                            dataset = %dataset.id,
                            exchange_id = %truncate(&req.exchange_id, 64),
                            error = %e,
                            "database error while reading changes"
                        );
                        let status = FetchStopped::Database(dataset.id.clone()).into();
                        // the broker may already be gone; the log records the failure either way
                        let _ = tx.send(Err(status)).await;
                        return Some(FetchStatus::Failed);
                    }
                    None => {
                        if !batch.is_empty()
                            && !send_changes(&mut sent, &mut last, &tx, std::mem::take(&mut batch))
                                .await
                        {
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
                    reason = %stopped,
                    "change poll stopped at its deadline"
                );
                // the broker may already be gone; the log records the failure either way
                let _ = tx.send(Err(stopped.into())).await;
                FetchStatus::Failed
            }
        };
        if sent.rows > 0 || status != FetchStatus::Ok {
            tracing::info!(
                dataset = %dataset.id,
                exchange_id = %truncate(&req.exchange_id, 64),
                consumer = %truncate(&req.consumer, 64),
                changes = sent.rows,
                status = ?status,
                "change poll finished"
            );
        }
        // a full page: more changes wait after its last
        let next = (status == FetchStatus::Ok && sent.rows == u64::from(page))
            .then(|| last.take())
            .flatten()
            .map(|after| pb::ChangesRequest {
                after: Some(after),
                ..req.clone()
            });
        Polled {
            entry: sent.entry(
                &dataset.id,
                [&req.exchange_id, &req.consumer, &req.purpose],
                &req.columns,
                status,
            ),
            next,
        }
    }
}

/// A poll's end: its receipt, and for a full page the request for the
/// page after it.
struct Polled {
    entry: ServedEntry,
    next: Option<pb::ChangesRequest>,
}

/// A row of a change poll as the broker receives it: a deletion or a row
/// out of scope without its record.
fn to_change(row: db::ChangeRow) -> pb::Change {
    let op = if row.deleted {
        pb::ChangeOp::Delete
    } else {
        pb::ChangeOp::Upsert
    };
    pb::Change {
        op: op as i32,
        position: Some(pb::ChangePosition {
            change: position_text(&row.change),
            key: position_text(&row.key),
        }),
        in_scope: row.in_scope,
        record: row.record.unwrap_or_default(),
    }
}

/// A position value's JSON text, as `Display` writes it but without
/// going through a formatter.
fn position_text(value: &serde_json::Value) -> String {
    // a JSON value always serializes
    serde_json::to_string(value).unwrap_or_default()
}

/// Sends a batch of changes; `false` when the receiver is gone (nothing
/// counted). The payload hash covers the records of upserts in scope.
async fn send_changes(
    sent: &mut Sent,
    last: &mut Option<pb::ChangePosition>,
    tx: &mpsc::Sender<Result<pb::ChangesResponse, Status>>,
    changes: Vec<pb::Change>,
) -> bool {
    let rows = changes.len();
    let end = changes.last().and_then(|c| c.position.clone());
    let counted = sent.count(
        changes
            .iter()
            .filter(|c| !c.record.is_empty())
            .map(|c| c.record.as_str()),
    );
    let delivered = sent
        .deliver(tx, pb::ChangesResponse { changes }, rows, counted)
        .await;
    if delivered {
        *last = end;
    }
    delivered
}
