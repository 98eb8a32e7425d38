//! Filtered reads of the audit log, for auditors: entries by agency,
//! dataset, purpose, decision, status, time, subject hash or exchange, in
//! `seq` order, one bounded page at a time.
//!
//! The SQL is built from fixed fragments only; every value is bound as a
//! parameter.

use crate::checkpoints::{raw_columns, raw_entry_from_row, to_i64};
use crate::{Backend, RawEntry, Store, StoreError};

/// Which entries to read. `None` does not filter; every filter given must
/// match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryQuery {
    /// Entries whose consumer or provider is this agency.
    pub agency: Option<String>,
    pub dataset: Option<String>,
    pub purpose: Option<String>,
    /// `allow` or `deny`.
    pub decision: Option<String>,
    /// `started`, `denied`, `invalid`, `ok`, `failed` or `cancelled`.
    pub status: Option<String>,
    /// Lowercase hex keyed hash of a subject: entries that looked it up
    /// by key or named it in a filter.
    pub subject_hash: Option<String>,
    pub exchange_id: Option<String>,
    /// Entries recorded at or after this time (as `format_instant` writes it).
    pub from: Option<String>,
    /// Entries recorded before this time (as `format_instant` writes it).
    pub until: Option<String>,
    /// Entries with `seq` at or above this one.
    pub from_seq: u64,
}

impl EntryQuery {
    /// The WHERE clause and the values to bind, in placeholder order, on
    /// `backend` (a SQLite store's subject index trails its log).
    fn condition(&self, backend: Backend) -> (String, Vec<String>) {
        let mut clauses = vec!["seq >= $1".to_owned()];
        let mut values = Vec::new();
        let next = |values: &mut Vec<String>, value: &str| {
            values.push(value.to_owned());
            // $1 is from_seq
            format!("${}", values.len() + 1)
        };
        if let Some(agency) = &self.agency {
            let p = next(&mut values, agency);
            let q = next(&mut values, agency);
            clauses.push(format!("(consumer = {p} OR provider = {q})"));
        }
        let columns = [
            ("dataset", &self.dataset),
            ("purpose", &self.purpose),
            ("decision", &self.decision),
            ("status", &self.status),
            ("exchange_id", &self.exchange_id),
        ];
        for (column, value) in columns {
            if let Some(value) = value {
                let p = next(&mut values, value);
                clauses.push(format!("{column} = {p}"));
            }
        }
        if let Some(hash) = &self.subject_hash {
            // the index finds the entries under the hash's key; of them,
            // those whose canonical text holds the hash name it
            let key = crate::subject_key(hash).to_string();
            let k = next(&mut values, &key);
            let index = match backend {
                Backend::Postgres => format!(
                    "SELECT seq FROM audit_subjects WHERE subject_key = CAST({k} AS BIGINT)"
                ),
                // and the entries the index has not reached yet
                Backend::Sqlite => format!(
                    "SELECT seq FROM audit_subjects WHERE subject_key = CAST({k} AS INTEGER) \
                     UNION ALL SELECT seq FROM audit_log WHERE seq >= ({})",
                    crate::sqlite_writer::MARK
                ),
            };
            let h = next(&mut values, &format!("\"{hash}\""));
            let named = match backend {
                Backend::Postgres => format!("position(convert_to({h}, 'UTF8') in entry) > 0"),
                Backend::Sqlite => format!("instr(entry, {h}) > 0"),
            };
            clauses.push(format!("seq IN ({index}) AND {named}"));
        }
        if let Some(from) = &self.from {
            let p = next(&mut values, from);
            clauses.push(format!("recorded_at >= {p}"));
        }
        if let Some(until) = &self.until {
            let p = next(&mut values, until);
            clauses.push(format!("recorded_at < {p}"));
        }
        (clauses.join(" AND "), values)
    }
}

impl Store {
    /// At most `limit` entries matching `query`, in `seq` order, as stored.
    pub async fn query_entries(
        &self,
        query: &EntryQuery,
        limit: u64,
    ) -> Result<Vec<RawEntry>, StoreError> {
        let (condition, values) = query.condition(self.backend());
        let sql = format!(
            "SELECT {} FROM audit_log WHERE {condition} ORDER BY seq LIMIT ${}",
            raw_columns(self.backend()),
            values.len() + 2
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(to_i64(query.from_seq));
        for value in values {
            q = q.bind(value);
        }
        let rows = q.bind(to_i64(limit)).fetch_all(self.pool()).await?;
        rows.iter().map(raw_entry_from_row).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_values() {
        let q = EntryQuery {
            agency: Some("dinsos".into()),
            decision: Some("deny".into()),
            until: Some("2026-01-01T00:00:00.000000Z".into()),
            ..Default::default()
        };
        let (condition, values) = q.condition(Backend::Postgres);
        assert_eq!(
            condition,
            "seq >= $1 AND (consumer = $2 OR provider = $3) AND decision = $4 AND recorded_at < $5"
        );
        assert_eq!(
            values,
            ["dinsos", "dinsos", "deny", "2026-01-01T00:00:00.000000Z"]
        );
        assert_eq!(
            EntryQuery::default().condition(Backend::Sqlite).0,
            "seq >= $1"
        );
        let hash = "0123456789abcdef".repeat(4);
        let by_subject = EntryQuery {
            subject_hash: Some(hash.clone()),
            ..Default::default()
        };
        let (condition, values) = by_subject.condition(Backend::Sqlite);
        assert_eq!(
            condition,
            "seq >= $1 AND seq IN (SELECT seq FROM audit_subjects \
             WHERE subject_key = CAST($2 AS INTEGER) UNION ALL SELECT seq FROM \
             audit_log WHERE seq >= (SELECT seq FROM audit_subjects_through)) \
             AND instr(entry, $3) > 0"
        );
        let key = 0x0123_4567_89ab_cdef_i64.to_string();
        assert_eq!(values, [key, format!("\"{hash}\"")]);
        let (condition, _) = by_subject.condition(Backend::Postgres);
        assert!(
            condition.ends_with("AND position(convert_to($3, 'UTF8') in entry) > 0"),
            "{condition}"
        );
    }
}
