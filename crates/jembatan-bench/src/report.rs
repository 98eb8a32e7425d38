//! The figures of one run: a readable table and one flat JSON object.

use std::fmt;

use serde_json::{Map, Value, json};

use crate::Options;

/// What B1's headline figure includes.
pub const MAPPING: &str = "B1 reads the table translated into the consumer's schema (validate, map, validate); the unmapped figure reads it in the provider's own schema";

/// B1: one full-table read each way. The headline (`rows_per_s`) is the
/// read translated into the consumer's schema.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkFigures {
    /// Records the broker streamed (checked against the receipt).
    pub rows_streamed: u64,
    /// Their JSON text length.
    pub bytes_streamed: u64,
    pub seconds: f64,
    pub rows_per_s: f64,
    /// Lines `COPY ... TO STDOUT` produced.
    pub direct_rows: u64,
    pub direct_bytes: u64,
    pub direct_seconds: f64,
    pub direct_rows_per_s: f64,
    /// Rows a plain sqlx fetch decoded.
    pub fetch_rows: u64,
    pub fetch_seconds: f64,
    pub fetch_rows_per_s: f64,
    /// The same read in the provider's own schema: no validation, no mapping.
    pub unmapped_rows_per_s: f64,
    pub unmapped_seconds: f64,
}

/// B2 at one concurrency level.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupFigures {
    pub concurrency: usize,
    /// Lookups completed (found, with a receipt).
    pub lookups: u64,
    /// Lookups the broker refused with `Unavailable` because the audit log
    /// could not be written at that moment; not in `lookups` or `per_s`.
    pub refused: u64,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub direct_lookups: u64,
    pub direct_per_s: f64,
    pub direct_p50_ms: f64,
    pub direct_p99_ms: f64,
    pub direct_p999_ms: f64,
    /// The same lookups through the HTTP/JSON door (HTTP/2 over the same
    /// mTLS port, one connection per client), measured in the same run.
    pub http_lookups: u64,
    pub http_per_s: f64,
    pub http_p50_ms: f64,
    pub http_p99_ms: f64,
}

/// B5: keys verified per second, through `VerifyBatch` and directly.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyFigures {
    pub keys: u64,
    /// Keys per call (and per direct `= ANY` batch).
    pub batch: usize,
    pub per_s: f64,
    pub direct_per_s: f64,
}

/// B6: one broker on a PostgreSQL store against two on one, same run.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaFigures {
    /// Lookup clients, spread over the replicas.
    pub clients: usize,
    pub lookup_one_per_s: f64,
    pub lookup_two_per_s: f64,
    pub appends_one_per_s: f64,
    pub appends_two_per_s: f64,
}

/// B7: change subscriptions.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscribeFigures {
    /// Changes a new subscription read from the first (every row).
    pub catchup_changes: u64,
    pub catchup_seconds: f64,
    pub catchup_rows_per_s: f64,
    /// The same rows read by one `Query`, in the same run.
    pub query_rows: u64,
    pub query_rows_per_s: f64,
    /// Single-row updates timed from commit to delivery.
    pub updates: u64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub rss: SubscribeRss,
    /// The same latency from a PostgreSQL logical replication source.
    pub logical: SubscribeLogical,
}

/// B7's latency from a logical replication source, or why it was not
/// measured.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscribeLogical {
    Measured {
        updates: u64,
        latency_p50_ms: f64,
        latency_p99_ms: f64,
    },
    Skipped(String),
}

/// B7's memory figure, or why it was not measured.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscribeRss {
    /// The broker's RSS idle and with `subscriptions` open.
    Measured {
        subscriptions: usize,
        idle_mib: f64,
        subscribed_mib: f64,
    },
    Skipped(String),
}

/// B2 with the broker's store on PostgreSQL instead of SQLite.
#[derive(Debug, Clone, PartialEq)]
pub struct PgStoreLookupFigures {
    pub clients: usize,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// B3.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditFigures {
    pub appenders: usize,
    pub sqlite_appends: u64,
    pub sqlite_per_s: f64,
    pub pg_appends: u64,
    pub pg_per_s: f64,
    /// Entries the offline verification recomputed and checked.
    pub verify_entries: u64,
    /// Seconds `verify` took on them (SQLite store).
    pub verify_seconds: f64,
    /// A broker's start on that log, and on larger ones.
    pub starts: Vec<crate::StartPoint>,
    /// `audit archive` of that log's first entries, once started on.
    pub archive: Option<crate::ArchivePoint>,
}

/// B4 after streaming `rows` rows (peaks are over the processes' lives).
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPoint {
    pub rows: u64,
    pub broker_peak_rss_mib: f64,
    pub adapter_peak_rss_mib: f64,
}

/// B4, or why it was not measured.
#[derive(Debug, Clone, PartialEq)]
pub enum MemoryFigures {
    Measured(Vec<MemoryPoint>),
    Skipped(String),
}

/// Every figure of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// UTC time the run started, RFC 3339.
    pub date: String,
    pub rows: u64,
    pub cores: usize,
    pub quick: bool,
    pub duration_s: f64,
    pub elapsed_s: f64,
    pub bulk: Option<BulkFigures>,
    pub lookups: Vec<LookupFigures>,
    pub lookups_pg_store: Option<PgStoreLookupFigures>,
    pub audit: Option<AuditFigures>,
    pub memory: MemoryFigures,
    pub verify: Option<VerifyFigures>,
    pub replicas: Option<ReplicaFigures>,
    pub subscribe: Option<SubscribeFigures>,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

impl Report {
    pub(crate) fn new(options: &Options) -> Report {
        Report {
            date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            rows: options.rows,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            quick: options.quick,
            duration_s: options.duration.as_secs_f64(),
            elapsed_s: 0.0,
            bulk: None,
            lookups: Vec::new(),
            lookups_pg_store: None,
            audit: None,
            memory: MemoryFigures::Skipped("not run".into()),
            verify: None,
            replicas: None,
            subscribe: None,
        }
    }

    /// The lookup figures at `concurrency`, if measured.
    pub fn lookup(&self, concurrency: usize) -> Option<&LookupFigures> {
        self.lookups.iter().find(|l| l.concurrency == concurrency)
    }

    /// One flat JSON object; rates are per second, latencies milliseconds.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_owned(), v);
        };
        put("date", json!(self.date));
        put("rows", json!(self.rows));
        put("cores", json!(self.cores));
        put("quick", json!(self.quick));
        put("duration_s", json!(self.duration_s));
        put("elapsed_s", json!(round(self.elapsed_s, 1)));
        put("mapping", json!(MAPPING));
        if let Some(b) = &self.bulk {
            put("bulk_rows_streamed", json!(b.rows_streamed));
            put("bulk_bytes_streamed", json!(b.bytes_streamed));
            put("bulk_rows_per_s", json!(round(b.rows_per_s, 0)));
            put("bulk_direct_rows", json!(b.direct_rows));
            put("bulk_direct_bytes", json!(b.direct_bytes));
            put(
                "bulk_direct_rows_per_s",
                json!(round(b.direct_rows_per_s, 0)),
            );
            put("bulk_fetch_rows", json!(b.fetch_rows));
            put("bulk_fetch_rows_per_s", json!(round(b.fetch_rows_per_s, 0)));
            put(
                "bulk_ratio",
                json!(round(ratio(b.rows_per_s, b.direct_rows_per_s), 4)),
            );
            put(
                "bulk_fetch_ratio",
                json!(round(ratio(b.rows_per_s, b.fetch_rows_per_s), 4)),
            );
            put(
                "bulk_unmapped_rows_per_s",
                json!(round(b.unmapped_rows_per_s, 0)),
            );
            put(
                "bulk_unmapped_ratio",
                json!(round(ratio(b.unmapped_rows_per_s, b.direct_rows_per_s), 4)),
            );
        }
        for l in &self.lookups {
            let c = l.concurrency;
            put(&format!("lookups_c{c}"), json!(l.lookups));
            put(&format!("lookups_refused_c{c}"), json!(l.refused));
            put(&format!("lookup_per_s_c{c}"), json!(round(l.per_s, 1)));
            put(&format!("lookup_p50_ms_c{c}"), json!(round(l.p50_ms, 3)));
            put(&format!("lookup_p99_ms_c{c}"), json!(round(l.p99_ms, 3)));
            put(&format!("lookup_p999_ms_c{c}"), json!(round(l.p999_ms, 3)));
            put(&format!("lookups_direct_c{c}"), json!(l.direct_lookups));
            put(
                &format!("lookup_direct_per_s_c{c}"),
                json!(round(l.direct_per_s, 1)),
            );
            put(
                &format!("lookup_direct_p50_ms_c{c}"),
                json!(round(l.direct_p50_ms, 3)),
            );
            put(
                &format!("lookup_direct_p99_ms_c{c}"),
                json!(round(l.direct_p99_ms, 3)),
            );
            put(
                &format!("lookup_direct_p999_ms_c{c}"),
                json!(round(l.direct_p999_ms, 3)),
            );
            put(
                &format!("lookup_ratio_c{c}"),
                json!(round(ratio(l.per_s, l.direct_per_s), 4)),
            );
            put(&format!("http_lookups_c{c}"), json!(l.http_lookups));
            put(
                &format!("http_lookup_per_s_c{c}"),
                json!(round(l.http_per_s, 1)),
            );
            put(
                &format!("http_lookup_p50_ms_c{c}"),
                json!(round(l.http_p50_ms, 3)),
            );
            put(
                &format!("http_lookup_p99_ms_c{c}"),
                json!(round(l.http_p99_ms, 3)),
            );
            put(
                &format!("http_lookup_ratio_c{c}"),
                json!(round(ratio(l.http_per_s, l.per_s), 4)),
            );
        }
        if let Some(p) = &self.lookups_pg_store {
            let c = p.clients;
            put(
                &format!("lookup_per_s_c{c}_pg_store"),
                json!(round(p.per_s, 1)),
            );
            put(
                &format!("lookup_p50_ms_c{c}_pg_store"),
                json!(round(p.p50_ms, 3)),
            );
            put(
                &format!("lookup_p99_ms_c{c}_pg_store"),
                json!(round(p.p99_ms, 3)),
            );
        }
        if let Some(v) = &self.verify {
            put("verify_batch_keys", json!(v.keys));
            put("verify_batch_size", json!(v.batch));
            put("verify_batch_per_s", json!(round(v.per_s, 0)));
            put("verify_batch_direct_per_s", json!(round(v.direct_per_s, 0)));
            put(
                "verify_batch_ratio",
                json!(round(ratio(v.per_s, v.direct_per_s), 4)),
            );
        }
        if let Some(r) = &self.replicas {
            put("replicas_lookup_clients", json!(r.clients));
            put(
                "replicas_lookup_per_s_1",
                json!(round(r.lookup_one_per_s, 1)),
            );
            put(
                "replicas_lookup_per_s_2",
                json!(round(r.lookup_two_per_s, 1)),
            );
            put(
                "replicas_lookup_ratio",
                json!(round(ratio(r.lookup_two_per_s, r.lookup_one_per_s), 4)),
            );
            put(
                "replicas_appends_per_s_1",
                json!(round(r.appends_one_per_s, 1)),
            );
            put(
                "replicas_appends_per_s_2",
                json!(round(r.appends_two_per_s, 1)),
            );
            put(
                "replicas_appends_ratio",
                json!(round(ratio(r.appends_two_per_s, r.appends_one_per_s), 4)),
            );
        }
        if let Some(s) = &self.subscribe {
            put("subscribe_catchup_changes", json!(s.catchup_changes));
            put(
                "subscribe_catchup_rows_per_s",
                json!(round(s.catchup_rows_per_s, 0)),
            );
            put("subscribe_query_rows", json!(s.query_rows));
            put(
                "subscribe_query_rows_per_s",
                json!(round(s.query_rows_per_s, 0)),
            );
            put(
                "subscribe_catchup_ratio",
                json!(round(ratio(s.catchup_rows_per_s, s.query_rows_per_s), 4)),
            );
            put("subscribe_updates", json!(s.updates));
            put(
                "subscribe_latency_p50_ms",
                json!(round(s.latency_p50_ms, 1)),
            );
            put(
                "subscribe_latency_p99_ms",
                json!(round(s.latency_p99_ms, 1)),
            );
            match &s.rss {
                SubscribeRss::Measured {
                    subscriptions,
                    idle_mib,
                    subscribed_mib,
                } => {
                    put("subscribe_rss_idle_mib", json!(round(*idle_mib, 1)));
                    put(
                        &format!("subscribe_rss_mib_{subscriptions}"),
                        json!(round(subscribed_mib - idle_mib, 1)),
                    );
                }
                SubscribeRss::Skipped(why) => {
                    put("subscribe_rss", json!(format!("skipped: {why}")));
                }
            }
            match &s.logical {
                SubscribeLogical::Measured {
                    updates,
                    latency_p50_ms,
                    latency_p99_ms,
                } => {
                    put("subscribe_updates_logical", json!(updates));
                    put(
                        "subscribe_latency_p50_ms_logical",
                        json!(round(*latency_p50_ms, 1)),
                    );
                    put(
                        "subscribe_latency_p99_ms_logical",
                        json!(round(*latency_p99_ms, 1)),
                    );
                }
                SubscribeLogical::Skipped(why) => {
                    put(
                        "subscribe_latency_logical",
                        json!(format!("skipped: {why}")),
                    );
                }
            }
        }
        if let Some(a) = &self.audit {
            put("audit_appenders", json!(a.appenders));
            put("audit_appends_sqlite", json!(a.sqlite_appends));
            put(
                "audit_appends_per_s_sqlite",
                json!(round(a.sqlite_per_s, 1)),
            );
            put("audit_appends_pg", json!(a.pg_appends));
            put("audit_appends_per_s_pg", json!(round(a.pg_per_s, 1)));
            put("verify_entries", json!(a.verify_entries));
            put("verify_seconds", json!(round(a.verify_seconds, 3)));
            for p in &a.starts {
                let n = rows_label(p.entries);
                put(
                    &format!("broker_first_start_s_{n}"),
                    json!(round(p.first_start_s, 3)),
                );
                put(&format!("broker_start_s_{n}"), json!(round(p.start_s, 3)));
            }
            if let Some(p) = &a.archive {
                put("archive_entries", json!(p.entries));
                put("archive_seconds", json!(round(p.seconds, 3)));
                // archiving reads, checks and writes every entry, then
                // deletes it: against verify's read and check of the same
                // number of entries in this run
                if a.verify_seconds > 0.0 && p.seconds > 0.0 {
                    let verify_rate = a.verify_entries as f64 / a.verify_seconds;
                    put(
                        "archive_vs_verify_ratio",
                        json!(round(p.entries as f64 / p.seconds / verify_rate, 3)),
                    );
                }
            }
        }
        match &self.memory {
            MemoryFigures::Measured(points) => {
                for p in points {
                    let n = rows_label(p.rows);
                    put(
                        &format!("broker_peak_rss_mib_{n}"),
                        json!(round(p.broker_peak_rss_mib, 1)),
                    );
                    put(
                        &format!("adapter_peak_rss_mib_{n}"),
                        json!(round(p.adapter_peak_rss_mib, 1)),
                    );
                }
            }
            MemoryFigures::Skipped(why) => put("memory", json!(format!("skipped: {why}"))),
        }
        Value::Object(m)
    }
}

/// `100k`, `1m`, `10m`, or the plain number.
pub(crate) fn rows_label(rows: u64) -> String {
    match rows {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}m", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

fn rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}/s")
    } else {
        format!("{x:.1}/s")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Jembatan bench {}: {} rows, {} cores, {:.1} s per timed phase{}",
            self.date,
            self.rows,
            self.cores,
            self.duration_s,
            if self.quick { " (quick)" } else { "" }
        )?;
        writeln!(f, "schema mapping: {MAPPING}")?;
        let line = |f: &mut fmt::Formatter<'_>, a: &str, b: &str, c: &str, d: &str| {
            writeln!(f, "{a:<34} {b:>14} {c:>14} {d:>8}")
        };
        writeln!(f)?;
        line(f, "figure", "Jembatan", "baseline", "ratio")?;
        line(
            f,
            &"-".repeat(34),
            &"-".repeat(14),
            &"-".repeat(14),
            &"-".repeat(8),
        )?;
        if let Some(b) = &self.bulk {
            line(
                f,
                "B1 bulk rows (vs COPY TO STDOUT)",
                &rate(b.rows_per_s),
                &rate(b.direct_rows_per_s),
                &format!("{:.3}", ratio(b.rows_per_s, b.direct_rows_per_s)),
            )?;
            line(
                f,
                "B1 bulk rows (vs sqlx fetch)",
                &rate(b.rows_per_s),
                &rate(b.fetch_rows_per_s),
                &format!("{:.3}", ratio(b.rows_per_s, b.fetch_rows_per_s)),
            )?;
            line(
                f,
                "B1 without mapping (vs COPY)",
                &rate(b.unmapped_rows_per_s),
                &rate(b.direct_rows_per_s),
                &format!("{:.3}", ratio(b.unmapped_rows_per_s, b.direct_rows_per_s)),
            )?;
        }
        for l in &self.lookups {
            let c = l.concurrency;
            line(
                f,
                &format!("B2 lookups, {c} clients"),
                &rate(l.per_s),
                &rate(l.direct_per_s),
                &format!("{:.3}", ratio(l.per_s, l.direct_per_s)),
            )?;
            if l.refused > 0 {
                line(
                    f,
                    "   refused (audit unavailable)",
                    &l.refused.to_string(),
                    "",
                    "",
                )?;
            }
            line(
                f,
                &format!("B2 HTTP/JSON vs gRPC, {c} clients"),
                &rate(l.http_per_s),
                &rate(l.per_s),
                &format!("{:.3}", ratio(l.http_per_s, l.per_s)),
            )?;
            for (q, a, b) in [
                ("p50", l.p50_ms, l.direct_p50_ms),
                ("p99", l.p99_ms, l.direct_p99_ms),
                ("p999", l.p999_ms, l.direct_p999_ms),
            ] {
                line(
                    f,
                    &format!("   latency {q}, {c} clients"),
                    &format!("{a:.2} ms"),
                    &format!("{b:.2} ms"),
                    &format!("{:.2}", ratio(a, b)),
                )?;
            }
        }
        if let Some(p) = &self.lookups_pg_store {
            let sqlite = self.lookups.iter().find(|l| l.concurrency == p.clients);
            line(
                f,
                &format!("B2 PostgreSQL store, {} clients", p.clients),
                &rate(p.per_s),
                &sqlite.map_or_else(String::new, |l| rate(l.per_s)),
                &sqlite.map_or_else(String::new, |l| format!("{:.3}", ratio(p.per_s, l.per_s))),
            )?;
            line(
                f,
                &format!("   latency p50 / p99, {} clients", p.clients),
                &format!("{:.2} ms", p.p50_ms),
                &format!("{:.2} ms", p.p99_ms),
                "",
            )?;
        }
        if let Some(v) = &self.verify {
            line(
                f,
                &format!("B5 batch verification, {} keys (vs = ANY)", v.keys),
                &rate(v.per_s),
                &rate(v.direct_per_s),
                &format!("{:.3}", ratio(v.per_s, v.direct_per_s)),
            )?;
        }
        if let Some(r) = &self.replicas {
            line(
                f,
                &format!("B6 lookups, 2 brokers vs 1 ({} clients)", r.clients),
                &rate(r.lookup_two_per_s),
                &rate(r.lookup_one_per_s),
                &format!("{:.3}", ratio(r.lookup_two_per_s, r.lookup_one_per_s)),
            )?;
            line(
                f,
                "B6 audit appends, 2 stores vs 1",
                &rate(r.appends_two_per_s),
                &rate(r.appends_one_per_s),
                &format!("{:.3}", ratio(r.appends_two_per_s, r.appends_one_per_s)),
            )?;
        }
        if let Some(s) = &self.subscribe {
            line(
                f,
                "B7 subscription catch-up (vs Query)",
                &rate(s.catchup_rows_per_s),
                &rate(s.query_rows_per_s),
                &format!("{:.3}", ratio(s.catchup_rows_per_s, s.query_rows_per_s)),
            )?;
            line(
                f,
                &format!("B7 commit to delivery, {} updates", s.updates),
                "",
                "",
                "",
            )?;
            line(
                f,
                "   latency p50 / p99",
                &format!("{:.1} ms", s.latency_p50_ms),
                &format!("{:.1} ms", s.latency_p99_ms),
                "",
            )?;
            match &s.rss {
                SubscribeRss::Measured {
                    subscriptions,
                    idle_mib,
                    subscribed_mib,
                } => line(
                    f,
                    &format!("B7 broker RSS, {subscriptions} subs (vs idle)"),
                    &format!("{subscribed_mib:.1} MiB"),
                    &format!("{idle_mib:.1} MiB"),
                    &format!("{:+.1}", subscribed_mib - idle_mib),
                )?,
                SubscribeRss::Skipped(why) => writeln!(f, "B7 broker RSS: skipped ({why})")?,
            }
            match &s.logical {
                SubscribeLogical::Measured {
                    updates,
                    latency_p50_ms,
                    latency_p99_ms,
                } => {
                    line(
                        f,
                        &format!("B7 logical replication, {updates} updates"),
                        "",
                        "",
                        "",
                    )?;
                    line(
                        f,
                        "   latency p50 / p99",
                        &format!("{latency_p50_ms:.1} ms"),
                        &format!("{latency_p99_ms:.1} ms"),
                        "",
                    )?;
                }
                SubscribeLogical::Skipped(why) => {
                    writeln!(f, "B7 logical replication: skipped ({why})")?
                }
            }
        }
        if let Some(a) = &self.audit {
            line(
                f,
                &format!("B3 audit appends, {} tasks", a.appenders),
                "",
                "",
                "",
            )?;
            line(f, "   SQLite store", &rate(a.sqlite_per_s), "", "")?;
            line(f, "   PostgreSQL store", &rate(a.pg_per_s), "", "")?;
            line(
                f,
                &format!("B3 audit verify, {} entries", a.verify_entries),
                &format!("{:.2} s", a.verify_seconds),
                "",
                "",
            )?;
            for p in &a.starts {
                line(
                    f,
                    &format!("broker start, {} entries", rows_label(p.entries)),
                    &format!("{:.3} s", p.start_s),
                    "",
                    "",
                )?;
                line(
                    f,
                    "   first start (builds the tiles)",
                    &format!("{:.3} s", p.first_start_s),
                    "",
                    "",
                )?;
            }
            if let Some(p) = &a.archive {
                line(
                    f,
                    &format!("audit archive, {} entries", rows_label(p.entries)),
                    &format!("{:.2} s", p.seconds),
                    "",
                    "",
                )?;
            }
        }
        match &self.memory {
            MemoryFigures::Measured(points) => {
                for p in points {
                    line(
                        f,
                        &format!("B4 peak RSS after {} rows", rows_label(p.rows)),
                        "",
                        "",
                        "",
                    )?;
                    line(
                        f,
                        "   broker",
                        &format!("{:.1} MiB", p.broker_peak_rss_mib),
                        "",
                        "",
                    )?;
                    line(
                        f,
                        "   adapter",
                        &format!("{:.1} MiB", p.adapter_peak_rss_mib),
                        "",
                        "",
                    )?;
                }
            }
            MemoryFigures::Skipped(why) => writeln!(f, "B4 peak RSS: skipped ({why})")?,
        }
        writeln!(f)?;
        if let Some(b) = &self.bulk {
            writeln!(
                f,
                "bulk: {} rows, {} bytes of JSON through the broker in {:.2} s; COPY {} bytes in {:.2} s; fetch {:.2} s",
                b.rows_streamed,
                b.bytes_streamed,
                b.seconds,
                b.direct_bytes,
                b.direct_seconds,
                b.fetch_seconds
            )?;
        }
        writeln!(f, "total time {:.1} s", self.elapsed_s)
    }
}
