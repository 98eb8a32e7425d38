//! Agreements and their quota counters.
//!
//! An agreement is stored as its JSON document plus the columns it is
//! searched by. Status changes are compare-and-set on the status the
//! caller saw, so two replicas (or two operators) cannot both apply a
//! transition from the same state. Quota counters are rows updated in one
//! statement each, never read-modify-write in the broker, so replicas
//! sharing the store share the counts.

use jembatan_core::{AgencyId, Agreement, AgreementStatus, DatasetId};
use sqlx::Row;

use crate::{Store, StoreError, now};

/// Which agreements [`Store::list_agreements`] returns; `None` matches all.
#[derive(Debug, Clone, Default)]
pub struct AgreementFilter {
    pub provider: Option<AgencyId>,
    pub consumer: Option<AgencyId>,
    pub dataset: Option<DatasetId>,
    pub status: Option<AgreementStatus>,
}

/// An agreement whose stored row changed, as the change feed sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    pub id: String,
    pub status: AgreementStatus,
    /// The row's `updated_at` (RFC 3339, microseconds).
    pub updated_at: String,
}

/// A counted quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    /// Records delivered in a UTC day.
    RowsPerDay,
    /// Requests allowed in a UTC minute.
    RequestsPerMinute,
}

impl QuotaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaKind::RowsPerDay => "rows_per_day",
            QuotaKind::RequestsPerMinute => "requests_per_minute",
        }
    }

    /// The start of the window `at` falls in, as stored.
    pub fn window(self, at: chrono::DateTime<chrono::Utc>) -> String {
        match self {
            QuotaKind::RowsPerDay => at.format("%Y-%m-%d").to_string(),
            QuotaKind::RequestsPerMinute => at.format("%Y-%m-%dT%H:%M").to_string(),
        }
    }
}

fn document(agreement: &Agreement) -> Result<String, StoreError> {
    serde_json::to_string(agreement).map_err(|e| StoreError::Corrupt {
        what: format!("agreement {}", agreement.id),
        message: e.to_string(),
    })
}

fn agreement_from_row(row: &sqlx::any::AnyRow) -> Result<Agreement, StoreError> {
    let doc: String = row.try_get(0)?;
    serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt {
        what: "agreement".into(),
        message: e.to_string(),
    })
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Stores a new agreement; [`StoreError::Conflict`] if its id is taken.
    pub async fn insert_agreement(&self, agreement: &Agreement) -> Result<(), StoreError> {
        let result = sqlx::query(
            "INSERT INTO agreements (id, provider, consumer, dataset, status, document, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&agreement.id)
        .bind(agreement.provider.as_str())
        .bind(agreement.consumer.as_str())
        .bind(agreement.dataset.as_str())
        .bind(agreement.status.as_str())
        .bind(document(agreement)?)
        .bind(now())
        .execute(self.pool())
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Err(
                StoreError::Conflict(format!("agreement {} already exists", agreement.id)),
            ),
            Err(e) => Err(e.into()),
        }
    }

    /// Stores `agreement` unless one with its id exists; returns the stored
    /// one when it does (which wins: it may have been approved or revoked
    /// since).
    pub async fn seed_agreement(
        &self,
        agreement: &Agreement,
    ) -> Result<Option<Agreement>, StoreError> {
        match self.insert_agreement(agreement).await {
            Ok(()) => Ok(None),
            Err(StoreError::Conflict(_)) => self.agreement(&agreement.id).await,
            Err(e) => Err(e),
        }
    }

    /// Replaces an agreement whose stored status is still `expected`;
    /// [`StoreError::Conflict`] if it changed meanwhile (or is gone).
    pub async fn update_agreement(
        &self,
        agreement: &Agreement,
        expected: AgreementStatus,
    ) -> Result<(), StoreError> {
        let result = sqlx::query(
            "UPDATE agreements SET status = $1, document = $2, updated_at = $3
             WHERE id = $4 AND status = $5",
        )
        .bind(agreement.status.as_str())
        .bind(document(agreement)?)
        .bind(now())
        .bind(&agreement.id)
        .bind(expected.as_str())
        .execute(self.pool())
        .await?;
        if result.rows_affected() == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict(format!(
                "agreement {} is no longer {expected}",
                agreement.id
            )))
        }
    }

    /// The policy version: a counter the store's triggers bump in the same
    /// transaction as any change to agencies, datasets or agreements
    /// (migration 0015). A decision read from memory is exact as long as
    /// this has not moved since the memory was filled.
    pub async fn policy_version(&self) -> Result<i64, StoreError> {
        if let Some(reader) = self.sqlite_reader() {
            match reader.policy_version() {
                Ok(n) => return Ok(n),
                // busy past its short wait: the pool reads, waiting longer
                Err(err) => {
                    tracing::debug!(error = %err, "the policy version is read through the pool")
                }
            }
        }
        let n: Option<i64> = sqlx::query_scalar("SELECT n FROM policy_version WHERE id = 1")
            .fetch_optional(self.pool())
            .await?;
        Ok(n.unwrap_or(0))
    }

    /// Every agreement (in any status) between `consumer` and `dataset`'s
    /// provider for `dataset`, ordered by id.
    pub async fn agreements_for(
        &self,
        consumer: &AgencyId,
        dataset: &DatasetId,
    ) -> Result<Vec<Agreement>, StoreError> {
        let rows = sqlx::query(
            "SELECT document FROM agreements WHERE consumer = $1 AND dataset = $2 ORDER BY id",
        )
        .bind(consumer.as_str())
        .bind(dataset.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(agreement_from_row).collect()
    }

    pub async fn agreement(&self, id: &str) -> Result<Option<Agreement>, StoreError> {
        let row = sqlx::query("SELECT document FROM agreements WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(agreement_from_row).transpose()
    }

    pub async fn agreements(&self) -> Result<Vec<Agreement>, StoreError> {
        self.list_agreements(&AgreementFilter::default()).await
    }

    /// Agreements matching `filter`, ordered by id.
    pub async fn list_agreements(
        &self,
        filter: &AgreementFilter,
    ) -> Result<Vec<Agreement>, StoreError> {
        let rows = sqlx::query(
            "SELECT document FROM agreements
             WHERE ($1 IS NULL OR provider = $1) AND ($2 IS NULL OR consumer = $2)
               AND ($3 IS NULL OR dataset = $3) AND ($4 IS NULL OR status = $4)
             ORDER BY id",
        )
        .bind(filter.provider.as_ref().map(|a| a.as_str().to_owned()))
        .bind(filter.consumer.as_ref().map(|a| a.as_str().to_owned()))
        .bind(filter.dataset.as_ref().map(|d| d.as_str().to_owned()))
        .bind(filter.status.map(|s| s.as_str().to_owned()))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(agreement_from_row).collect()
    }

    /// Agreements whose row changed at or after `since` (an `updated_at`
    /// value), oldest change first: the feed replicas watch for
    /// revocations made elsewhere.
    pub async fn agreement_changes(&self, since: &str) -> Result<Vec<StatusChange>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, status, updated_at FROM agreements WHERE updated_at >= $1
             ORDER BY updated_at, id",
        )
        .bind(since)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get(1)?;
                Ok(StatusChange {
                    id: r.try_get(0)?,
                    status: status
                        .parse()
                        .map_err(|e: jembatan_core::InvalidArgument| StoreError::Corrupt {
                            what: "agreement status".into(),
                            message: e.to_string(),
                        })?,
                    updated_at: r.try_get(2)?,
                })
            })
            .collect()
    }

    /// How much of `quota` the agreement used in `window`.
    pub async fn quota_used(
        &self,
        agreement_id: &str,
        quota: QuotaKind,
        window: &str,
    ) -> Result<u64, StoreError> {
        let used: Option<i64> = sqlx::query_scalar(
            "SELECT used FROM quota_usage
             WHERE agreement_id = $1 AND quota = $2 AND window_start = $3",
        )
        .bind(agreement_id)
        .bind(quota.as_str())
        .bind(window)
        .fetch_optional(self.pool())
        .await?;
        Ok(used.map_or(0, |u| u64::try_from(u).unwrap_or(0)))
    }

    /// Takes `n` units of `quota` in `window` if that keeps the count at
    /// most `limit`; all or nothing, in one statement. Returns whether
    /// they were taken.
    pub async fn take_quota(
        &self,
        agreement_id: &str,
        quota: QuotaKind,
        window: &str,
        n: u64,
        limit: u64,
    ) -> Result<bool, StoreError> {
        if n > limit {
            return Ok(false);
        }
        let result = sqlx::query(
            "INSERT INTO quota_usage (agreement_id, quota, window_start, used)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (agreement_id, quota, window_start)
             DO UPDATE SET used = quota_usage.used + excluded.used
             WHERE quota_usage.used + excluded.used <= $5",
        )
        .bind(agreement_id)
        .bind(quota.as_str())
        .bind(window)
        .bind(to_i64(n))
        .bind(to_i64(limit))
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Takes up to `n` units of `quota` in `window` without passing
    /// `limit`; returns how many were taken (0 when none are left).
    pub async fn take_quota_up_to(
        &self,
        agreement_id: &str,
        quota: QuotaKind,
        window: &str,
        n: u64,
        limit: u64,
    ) -> Result<u64, StoreError> {
        let mut want = n.min(limit);
        // Others may take some between our read and our take: try again
        // with what is left, a bounded number of times.
        for _ in 0..8 {
            if want == 0 {
                return Ok(0);
            }
            if self
                .take_quota(agreement_id, quota, window, want, limit)
                .await?
            {
                return Ok(want);
            }
            let used = self.quota_used(agreement_id, quota, window).await?;
            want = n.min(limit.saturating_sub(used));
        }
        Ok(0)
    }

    /// Deletes counters of windows that ended before `before_day` (for
    /// daily quotas) and `before_minute` (for per-minute ones).
    pub async fn prune_quota_windows(
        &self,
        before_day: &str,
        before_minute: &str,
    ) -> Result<u64, StoreError> {
        let result = sqlx::query(
            "DELETE FROM quota_usage WHERE (quota = $1 AND window_start < $2)
                OR (quota = $3 AND window_start < $4)",
        )
        .bind(QuotaKind::RowsPerDay.as_str())
        .bind(before_day)
        .bind(QuotaKind::RequestsPerMinute.as_str())
        .bind(before_minute)
        .execute(self.pool())
        .await?;
        Ok(result.rows_affected())
    }
}
