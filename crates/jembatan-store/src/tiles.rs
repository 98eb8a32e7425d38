//! Hash tiles of the audit log's Merkle tree (`audit_tiles`, C2SP
//! tlog-tiles layout): written as the tree grows, read a few at a time to
//! make proofs.
//!
//! Tiles are derived data: the tree is fixed by `audit_log` alone, so any
//! replica that hashes the same entries writes the same tiles. A write
//! replaces a stored tile only with a longer one (a partial tile growing),
//! so replicas writing at once, or one behind another, never shorten the
//! tree, and a full tile is written once. Nothing here trusts a tile: every
//! proof made from tiles is checked against a signed checkpoint's root
//! before it is served, and every checkpoint is checked against them
//! before it is signed.

use jembatan_tlog::merkle::tile::{
    Tile, TileBuilder, TileError, TileId, Tiles, edge, needed_for_inclusion, needed_for_root,
};
use jembatan_tlog::merkle::{CompactRange, Hash, leaf_hash};
use sqlx::Row;

use crate::checkpoints::{to_i64, to_u64};
use crate::{Backend, Store, StoreError};

/// Tiles per INSERT statement (three bind parameters each, 8 KiB a tile).
const TILES_PER_INSERT: usize = 64;

fn corrupt(id: TileId, message: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what: format!("audit tile {}/{}", id.level, id.index),
        message: message.into(),
    }
}

fn inconsistent(e: TileError) -> StoreError {
    StoreError::Corrupt {
        what: "audit tiles".into(),
        message: e.to_string(),
    }
}

/// The `hashes` column as bytes. SQLite would hand back a tile rewritten
/// as TEXT as text (and count its length in characters): read it as bytes
/// whatever its storage class, so a changed tile is judged by what it
/// holds.
fn hashes_column(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "CAST(hashes AS BLOB)",
        Backend::Postgres => "hashes",
    }
}

/// What the inclusion proof of one entry is made from.
#[derive(Debug)]
pub struct InclusionInputs {
    /// The tiles the proof reads (and, once the entry is archived, the
    /// one holding its leaf).
    pub tiles: Tiles,
    /// The entry's leaf hash: from its stored bytes, or from the tiles
    /// once it is archived; `None` when neither holds it.
    pub leaf: Option<Hash>,
    /// Whether the entry is archived (no longer in the store).
    pub archived: bool,
}

impl Store {
    /// The tiles and leaf hash the inclusion proof of entry `index` in the
    /// tree of `size` leaves needs, read in one query each. Nothing here
    /// is trusted: a proof made from them is checked against a signed
    /// root before it is used.
    pub async fn inclusion_inputs(
        &self,
        index: u64,
        size: u64,
    ) -> Result<InclusionInputs, StoreError> {
        let archived = index < self.archived_up_to().await?;
        let mut wanted = needed_for_inclusion(index, size);
        if archived {
            let leaf_tile = TileId {
                level: 0,
                index: index >> 8,
            };
            wanted.push((leaf_tile, (index % 256) as usize + 1));
        }
        let tiles = self.tiles(&wanted).await?;
        let leaf = if archived {
            tiles.node(0, index).ok()
        } else {
            self.raw_entries(index, 1)
                .await?
                .pop()
                .filter(|e| e.seq == index)
                .map(|e| leaf_hash(&e.entry))
        };
        Ok(InclusionInputs {
            tiles,
            leaf,
            archived,
        })
    }

    /// Writes tiles in one transaction, each replacing a stored one only if
    /// it is longer.
    pub async fn write_tiles(&self, tiles: &[Tile]) -> Result<(), StoreError> {
        if tiles.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for chunk in tiles.chunks(TILES_PER_INSERT) {
            let mut sql = String::from("INSERT INTO audit_tiles (level, idx, hashes) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                let n = 3 * i;
                sql.push_str(&format!("(${}, ${}, ${})", n + 1, n + 2, n + 3));
            }
            sql.push_str(
                " ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes
                  WHERE length(excluded.hashes) > length(audit_tiles.hashes)",
            );
            // Only placeholders are interpolated; every value is bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for tile in chunk {
                q = q
                    .bind(i64::from(tile.id.level))
                    .bind(to_i64(tile.id.index))
                    .bind(tile.to_bytes());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The stored tiles among `wanted`, in one read. A tile that is absent
    /// or shorter than wanted is left for [`Tiles`] to report when used.
    pub async fn tiles(&self, wanted: &[(TileId, usize)]) -> Result<Tiles, StoreError> {
        let mut tiles = Tiles::new();
        for chunk in wanted.chunks(TILES_PER_INSERT) {
            let mut sql = format!(
                "SELECT level, idx, {} FROM audit_tiles WHERE ",
                hashes_column(self.backend())
            );
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(" OR ");
                }
                sql.push_str(&format!(
                    "(level = ${} AND idx = ${})",
                    2 * i + 1,
                    2 * i + 2
                ));
            }
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, _) in chunk {
                q = q.bind(i64::from(id.level)).bind(to_i64(id.index));
            }
            for row in q.fetch_all(self.pool()).await? {
                let level: i64 = row.try_get(0)?;
                let index = to_u64(row.try_get(1)?, "audit tile index")?;
                let id = TileId {
                    level: u8::try_from(level).map_err(|_| StoreError::Corrupt {
                        what: "audit tile".into(),
                        message: format!("level {level}"),
                    })?,
                    index,
                };
                let bytes: Vec<u8> = row.try_get(2)?;
                let tile = Tile::from_bytes(id, &bytes)
                    .ok_or_else(|| corrupt(id, format!("{} bytes", bytes.len())))?;
                tiles.insert(tile);
            }
        }
        Ok(tiles)
    }

    /// Leaves the stored tiles cover: the tree size their lowest level
    /// reaches (0 when there are none).
    pub async fn tiles_size(&self) -> Result<u64, StoreError> {
        let sql = format!(
            "SELECT idx, length({}) FROM audit_tiles WHERE level = 0 ORDER BY idx DESC LIMIT 1",
            hashes_column(self.backend())
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else {
            return Ok(0);
        };
        let index = to_u64(row.try_get(0)?, "audit tile index")?;
        let bytes = to_u64(row.try_get(1)?, "audit tile length")?;
        let id = TileId { level: 0, index };
        if !bytes.is_multiple_of(32) || bytes > 256 * 32 {
            return Err(corrupt(id, format!("{bytes} bytes")));
        }
        index
            .checked_mul(256)
            .and_then(|n| n.checked_add(bytes / 32))
            .ok_or_else(|| corrupt(id, "beyond the largest tree"))
    }

    /// A builder resumed at the end of the stored tiles, holding only their
    /// right edge.
    pub async fn tile_builder(&self) -> Result<TileBuilder, StoreError> {
        let size = self.tiles_size().await?;
        let edge = edge(size);
        let tiles = self.tiles(&edge).await?;
        let partial = edge
            .iter()
            .map(|(id, _)| tiles.get(*id).map(<[_]>::to_vec).unwrap_or_default())
            .collect();
        TileBuilder::resume(size, partial).map_err(inconsistent)
    }

    /// The tree of the first `size` leaves as a compact range (the roots
    /// of its perfect subtrees, largest first) from the stored tiles
    /// alone: where reading resumes when the entries before `size` have
    /// been archived. Nothing here trusts the tiles; a root computed on
    /// from it is checked against a signed checkpoint.
    pub async fn tree_at(&self, size: u64) -> Result<CompactRange, StoreError> {
        let tiles = self.tiles(&needed_for_root(size)).await?;
        let mut hashes = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for height in (0..u64::BITS).rev() {
            let width = 1u64 << height;
            if size & width != 0 {
                hashes.push(tiles.node(height, start >> height).map_err(inconsistent)?);
                start += width;
            }
        }
        CompactRange::from_parts(size, hashes).ok_or_else(|| StoreError::Corrupt {
            what: "audit tiles".into(),
            message: format!("no compact range of {size} leaves"),
        })
    }

    /// The root of the tree of `size` leaves from the stored tiles alone.
    pub async fn tiles_root(&self, size: u64) -> Result<Hash, StoreError> {
        let tiles = self.tiles(&needed_for_root(size)).await?;
        tiles.root(size).map_err(inconsistent)
    }
}
