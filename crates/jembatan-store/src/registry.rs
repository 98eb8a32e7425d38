//! Storage of the schema registry: per-dataset settings, schema documents
//! keyed by their content id, numbered versions and mappings.
//!
//! The store keeps documents as text and never judges them: parsing,
//! compatibility and type checks happen in the broker before anything is
//! written here. Version numbers are assigned inside one write
//! transaction, so two registrations racing for the same dataset get
//! consecutive versions (or, across PostgreSQL replicas, one of them a
//! [`StoreError::Conflict`] to retry).

use sqlx::Row;

use crate::{Store, StoreError, now};

/// A dataset known to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryDataset {
    pub dataset: String,
    /// The dataset's own compatibility mode; `None` means the registry default.
    pub compatibility: Option<String>,
    pub optional_friendly: bool,
    /// Highest version number, 0 if none is registered yet.
    pub latest_version: u32,
}

/// Lifecycle state of one schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionState {
    Active,
    Deprecated,
    /// Refused for new exchanges.
    Disabled,
}

impl VersionState {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Active => "active",
            VersionState::Deprecated => "deprecated",
            VersionState::Disabled => "disabled",
        }
    }
}

/// A version state the registry does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown version state {0:?}: expected active, deprecated or disabled")]
pub struct UnknownVersionState(pub String);

impl std::str::FromStr for VersionState {
    type Err = UnknownVersionState;
    fn from_str(s: &str) -> Result<Self, UnknownVersionState> {
        match s.to_ascii_lowercase().as_str() {
            "active" => Ok(VersionState::Active),
            "deprecated" => Ok(VersionState::Deprecated),
            "disabled" => Ok(VersionState::Disabled),
            other => Err(UnknownVersionState(other.to_owned())),
        }
    }
}

impl std::fmt::Display for VersionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One registered schema version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSchemaVersion {
    pub dataset: String,
    pub version: u32,
    pub schema_id: String,
    /// The schema document (canonical JSON text).
    pub document: String,
    pub state: VersionState,
    pub registered_at: String,
    pub registered_by: String,
}

/// One registered mapping version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMapping {
    /// `<dataset>@<version>` of the records it reads.
    pub source: String,
    /// `<dataset>@<version>` of the records it produces.
    pub target: String,
    pub version: u32,
    /// The mapping document (canonical JSON text).
    pub document: String,
    pub registered_at: String,
    pub registered_by: String,
    /// A disabled version serves no exchange; the newest active one does.
    pub state: VersionState,
}

const VERSION_COLUMNS: &str =
    "v.dataset, v.version, v.schema_id, s.document, v.state, v.registered_at, v.registered_by";

fn version_from_row(row: &sqlx::any::AnyRow) -> Result<StoredSchemaVersion, StoreError> {
    let state: String = row.try_get(4)?;
    Ok(StoredSchemaVersion {
        dataset: row.try_get(0)?,
        version: to_u32(row.try_get(1)?, "schema version")?,
        schema_id: row.try_get(2)?,
        document: row.try_get(3)?,
        state: state
            .parse()
            .map_err(|e: UnknownVersionState| StoreError::Corrupt {
                what: "schema version state".into(),
                message: e.to_string(),
            })?,
        registered_at: row.try_get(5)?,
        registered_by: row.try_get(6)?,
    })
}

fn mapping_from_row(row: &sqlx::any::AnyRow) -> Result<StoredMapping, StoreError> {
    Ok(StoredMapping {
        source: row.try_get(0)?,
        target: row.try_get(1)?,
        version: to_u32(row.try_get(2)?, "mapping version")?,
        document: row.try_get(3)?,
        registered_at: row.try_get(4)?,
        registered_by: row.try_get(5)?,
        state: {
            let state: String = row.try_get(6)?;
            state
                .parse()
                .map_err(|e: UnknownVersionState| StoreError::Corrupt {
                    what: "mapping version state".into(),
                    message: e.0,
                })?
        },
    })
}

fn to_u32(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt {
        what: what.into(),
        message: format!("{v} is out of range"),
    })
}

/// Unique-key violations become [`StoreError::Conflict`].
fn conflict(err: sqlx::Error, what: String) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::Database(err),
    }
}

impl Store {
    /// Every dataset the registry knows, by name.
    pub async fn registry_datasets(&self) -> Result<Vec<RegistryDataset>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.dataset, d.compatibility, d.optional_friendly,
                    COALESCE((SELECT MAX(v.version) FROM schema_versions v WHERE v.dataset = d.dataset), 0)
             FROM registry_datasets d ORDER BY d.dataset",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(registry_dataset_from_row).collect()
    }

    pub async fn registry_dataset(
        &self,
        dataset: &str,
    ) -> Result<Option<RegistryDataset>, StoreError> {
        let row = sqlx::query(
            "SELECT d.dataset, d.compatibility, d.optional_friendly,
                    COALESCE((SELECT MAX(v.version) FROM schema_versions v WHERE v.dataset = d.dataset), 0)
             FROM registry_datasets d WHERE d.dataset = $1",
        )
        .bind(dataset)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(registry_dataset_from_row).transpose()
    }

    /// Sets a dataset's compatibility mode (`None`: the registry default),
    /// creating its registry entry if needed.
    pub async fn set_compatibility(
        &self,
        dataset: &str,
        mode: Option<&str>,
        optional_friendly: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO registry_datasets (dataset, compatibility, optional_friendly, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (dataset) DO UPDATE SET compatibility = excluded.compatibility,
                 optional_friendly = excluded.optional_friendly, updated_at = excluded.updated_at",
        )
        .bind(dataset)
        .bind(mode)
        .bind(i64::from(optional_friendly))
        .bind(now())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Every version of a dataset, oldest first.
    pub async fn schema_versions(
        &self,
        dataset: &str,
    ) -> Result<Vec<StoredSchemaVersion>, StoreError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM schema_versions v JOIN schemas s ON s.schema_id = v.schema_id
             WHERE v.dataset = $1 ORDER BY v.version"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(dataset)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// One version; `None` for the latest.
    pub async fn schema_version(
        &self,
        dataset: &str,
        version: Option<u32>,
    ) -> Result<Option<StoredSchemaVersion>, StoreError> {
        let sql = match version {
            Some(_) => format!(
                "SELECT {VERSION_COLUMNS} FROM schema_versions v JOIN schemas s ON s.schema_id = v.schema_id
                 WHERE v.dataset = $1 AND v.version = $2"
            ),
            None => format!(
                "SELECT {VERSION_COLUMNS} FROM schema_versions v JOIN schemas s ON s.schema_id = v.schema_id
                 WHERE v.dataset = $1 AND v.version >= $2 ORDER BY v.version DESC LIMIT 1"
            ),
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(dataset)
            .bind(i64::from(version.unwrap_or(0)))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    /// The versions (of any dataset) that hold the schema with this id.
    pub async fn versions_with_schema(
        &self,
        schema_id: &str,
    ) -> Result<Vec<StoredSchemaVersion>, StoreError> {
        let sql = format!(
            "SELECT {VERSION_COLUMNS} FROM schema_versions v JOIN schemas s ON s.schema_id = v.schema_id
             WHERE v.schema_id = $1 ORDER BY v.dataset, v.version"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(schema_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// The schema document with this id, whichever version holds it.
    pub async fn schema_document(&self, schema_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT document FROM schemas WHERE schema_id = $1")
            .bind(schema_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Stores `document` as version `expected_version` of `dataset`.
    /// `expected_version` must be one past the latest version the caller
    /// judged compatibility against; if another registration got there
    /// first the call fails with [`StoreError::Conflict`] and nothing is
    /// written, so no version is ever stored unchecked.
    pub async fn insert_schema_version(
        &self,
        dataset: &str,
        expected_version: u32,
        schema_id: &str,
        document: &str,
        registered_by: &str,
    ) -> Result<StoredSchemaVersion, StoreError> {
        let mut tx = self.begin_write().await?;
        let at = now();
        sqlx::query(
            "INSERT INTO registry_datasets (dataset, compatibility, optional_friendly, updated_at)
             VALUES ($1, NULL, 0, $2) ON CONFLICT (dataset) DO NOTHING",
        )
        .bind(dataset)
        .bind(&at)
        .execute(&mut *tx)
        .await?;
        let latest: i64 =
            sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_versions WHERE dataset = $1")
                .bind(dataset)
                .fetch_one(&mut *tx)
                .await?
                .try_get(0)?;
        if latest + 1 != i64::from(expected_version) {
            return Err(StoreError::Conflict(format!(
                "{dataset} is at version {latest} now, not {}; check again and retry",
                expected_version.saturating_sub(1)
            )));
        }
        sqlx::query(
            "INSERT INTO schemas (schema_id, document) VALUES ($1, $2)
             ON CONFLICT (schema_id) DO NOTHING",
        )
        .bind(schema_id)
        .bind(document)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO schema_versions (dataset, version, schema_id, state, registered_at, registered_by)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(dataset)
        .bind(i64::from(expected_version))
        .bind(schema_id)
        .bind(VersionState::Active.as_str())
        .bind(&at)
        .bind(registered_by)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("{dataset}@{expected_version} was registered concurrently; retry")))?;
        tx.commit().await?;
        Ok(StoredSchemaVersion {
            dataset: dataset.to_owned(),
            version: expected_version,
            schema_id: schema_id.to_owned(),
            document: document.to_owned(),
            state: VersionState::Active,
            registered_at: at,
            registered_by: registered_by.to_owned(),
        })
    }

    /// Changes a version's state; returns it, or `None` if there is no such version.
    pub async fn set_version_state(
        &self,
        dataset: &str,
        version: u32,
        state: VersionState,
    ) -> Result<Option<StoredSchemaVersion>, StoreError> {
        let done = sqlx::query(
            "UPDATE schema_versions SET state = $1 WHERE dataset = $2 AND version = $3",
        )
        .bind(state.as_str())
        .bind(dataset)
        .bind(i64::from(version))
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.schema_version(dataset, Some(version)).await
    }

    /// Sets a mapping version's state; `None` when there is no such version.
    pub async fn set_mapping_state(
        &self,
        source: &str,
        target: &str,
        version: u32,
        state: VersionState,
    ) -> Result<Option<StoredMapping>, StoreError> {
        let done = sqlx::query(
            "UPDATE mappings SET state = $1 WHERE source = $2 AND target = $3 AND version = $4",
        )
        .bind(state.as_str())
        .bind(source)
        .bind(target)
        .bind(i64::from(version))
        .execute(self.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.mapping(source, target, Some(version)).await
    }

    /// Stores a mapping as `version` of its (source, target) pair, which
    /// must be one past the latest; a registration that lost a race fails
    /// with [`StoreError::Conflict`].
    pub async fn insert_mapping(
        &self,
        source: &str,
        target: &str,
        version: u32,
        document: &str,
        registered_by: &str,
    ) -> Result<StoredMapping, StoreError> {
        let mut tx = self.begin_write().await?;
        let latest: i64 = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) FROM mappings WHERE source = $1 AND target = $2",
        )
        .bind(source)
        .bind(target)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        if latest + 1 != i64::from(version) {
            return Err(StoreError::Conflict(format!(
                "mapping {source} -> {target} is at version {latest} now, not {}; retry",
                version.saturating_sub(1)
            )));
        }
        let at = now();
        sqlx::query(
            "INSERT INTO mappings (source, target, version, document, registered_at, registered_by)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(source)
        .bind(target)
        .bind(i64::from(version))
        .bind(document)
        .bind(&at)
        .bind(registered_by)
        .execute(&mut *tx)
        .await
        .map_err(|e| {
            conflict(
                e,
                format!("mapping {source} -> {target} was registered concurrently; retry"),
            )
        })?;
        tx.commit().await?;
        Ok(StoredMapping {
            source: source.to_owned(),
            target: target.to_owned(),
            version,
            document: document.to_owned(),
            registered_at: at,
            registered_by: registered_by.to_owned(),
            state: VersionState::Active,
        })
    }

    /// A mapping version; `None` for the latest.
    pub async fn mapping(
        &self,
        source: &str,
        target: &str,
        version: Option<u32>,
    ) -> Result<Option<StoredMapping>, StoreError> {
        let sql = match version {
            Some(_) => {
                "SELECT source, target, version, document, registered_at, registered_by, state FROM mappings
                 WHERE source = $1 AND target = $2 AND version = $3"
            }
            None => {
                "SELECT source, target, version, document, registered_at, registered_by, state FROM mappings
                 WHERE source = $1 AND target = $2 AND version >= $3 ORDER BY version DESC LIMIT 1"
            }
        };
        let row = sqlx::query(sql)
            .bind(source)
            .bind(target)
            .bind(i64::from(version.unwrap_or(0)))
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(mapping_from_row).transpose()
    }

    /// Every version of every mapping whose target is `target`, by
    /// source, newest version first.
    pub async fn mappings_to(&self, target: &str) -> Result<Vec<StoredMapping>, StoreError> {
        let rows = sqlx::query(
            "SELECT source, target, version, document, registered_at, registered_by, state
             FROM mappings WHERE target = $1
             ORDER BY source, version DESC",
        )
        .bind(target)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(mapping_from_row).collect()
    }

    /// Every mapping version, by source, target and version.
    pub async fn mappings(&self) -> Result<Vec<StoredMapping>, StoreError> {
        let rows = sqlx::query(
            "SELECT source, target, version, document, registered_at, registered_by, state FROM mappings
             ORDER BY source, target, version",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(mapping_from_row).collect()
    }
}

fn registry_dataset_from_row(row: &sqlx::any::AnyRow) -> Result<RegistryDataset, StoreError> {
    let friendly: i64 = row.try_get(2)?;
    Ok(RegistryDataset {
        dataset: row.try_get(0)?,
        compatibility: row.try_get(1)?,
        optional_friendly: friendly != 0,
        latest_version: to_u32(row.try_get(3)?, "schema version")?,
    })
}
