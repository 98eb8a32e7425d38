//! Signed checkpoints of the audit log's Merkle tree, and its tiles.
//!
//! At start the broker resumes the tree from its stored tiles (building
//! them from the entries, a bounded step at a time, when the store has
//! none yet: a store written before tiles, or one behind), and refuses to
//! run if the latest stored checkpoint does not match it: the root at the
//! checkpoint's size is made from the stored tiles and the entries after
//! the last full tile (O(log n) reads, not a pass over the log; `jembatan
//! audit verify` checks every entry). Then a task picks up new entries
//! (including those other replicas append to a shared store) by reading
//! `seq >= size` in order, writes the tiles they complete or grow, and
//! signs and stores a checkpoint of the current size every
//! `checkpoint_every` entries or `checkpoint_interval`, whichever comes
//! first, and once more at shutdown — only after checking that the stored
//! tiles give the root it signs, so every signed tree can be proven from
//! the tiles. Of the replicas sharing a store only the holder of the
//! checkpoint lease signs (`replica.rs`); the others follow the latest
//! stored checkpoint for their receipts, and one of them takes the lease
//! over once its holder is gone.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jembatan_store::Store;
use jembatan_store::verify::{catch_up_tiles, check_checkpoint, tiles_root_with_tail};
use jembatan_tlog::merkle::tile::TileBuilder;
use jembatan_tlog::note::{Checkpoint, Signer, Verifier};
use tokio::sync::{Mutex, watch};

use crate::BrokerError;
use crate::replica::{Lease, Replica};

/// The tree as this broker knows it, and the key that signs it.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    store: Store,
    signer: Signer,
    /// The tree's right edge; `None` after a failed catch-up, until it is
    /// resumed from the stored tiles.
    tiles: Option<TileBuilder>,
    /// Size of the latest stored checkpoint.
    latest: u64,
    /// The latest signed note, for receipts.
    note: watch::Sender<Option<String>>,
}

fn failed(message: String) -> BrokerError {
    BrokerError::Checkpoint(message)
}

impl Checkpointer {
    /// Resumes the tree from the stored tiles, building those missing from
    /// the entries, and checks the latest stored checkpoint against it.
    pub(crate) async fn open(store: Store, signer: Signer) -> Result<Self, BrokerError> {
        let mut tiles = store.tile_builder().await?;
        let log_size = store.audit_log_size().await?;
        if log_size < tiles.size() {
            return Err(failed(format!(
                "the tree's tiles cover {} entries but the log has only {log_size}",
                tiles.size()
            )));
        }
        let latest = store.latest_checkpoint().await?;
        if let Some(c) = &latest {
            if tiles.size() < c.size {
                tracing::info!(
                    from = tiles.size(),
                    to = c.size,
                    "building the audit log's tree tiles"
                );
                catch_up_tiles(&store, &mut tiles, Some(c.size))
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                if tiles.size() < c.size {
                    return Err(failed(format!(
                        "checkpoint at size {}: the log has only {} entries",
                        c.size,
                        tiles.size()
                    )));
                }
            }
            let root = tiles_root_with_tail(&store, c.size)
                .await
                .map_err(|e| failed(e.to_string()))?;
            check_checkpoint(c, &root, &signer.verifier()).map_err(|e| failed(e.to_string()))?;
            if let Ok(signed) = jembatan_core::agreement::parse_instant(&c.created_at) {
                jembatan_telemetry::checkpoint_signed(signed.timestamp());
            }
        }
        catch_up_tiles(&store, &mut tiles, None)
            .await
            .map_err(|e| failed(e.to_string()))?;
        Ok(Checkpointer {
            store,
            signer,
            tiles: Some(tiles),
            note: watch::Sender::new(latest.as_ref().map(|c| c.note.clone())),
            latest: latest.map_or(0, |c| c.size),
        })
    }

    /// Follows the latest stored checkpoint (signed by another replica),
    /// for the notes handed out with receipts.
    pub(crate) async fn follow(&mut self) -> Result<(), BrokerError> {
        if let Some(c) = self.store.latest_checkpoint().await?
            && c.size > self.latest
        {
            self.latest = c.size;
            self.note.send_replace(Some(c.note));
        }
        Ok(())
    }

    /// Picks up new entries, writes their tiles and, if the tree grew past
    /// the latest stored checkpoint, signs and stores a checkpoint of its
    /// size while `lease` is held. Returns the size checkpointed, if any.
    pub(crate) async fn checkpoint(&mut self, lease: &Lease) -> Result<Option<u64>, BrokerError> {
        let mut tiles = match self.tiles.take() {
            Some(tiles) => tiles,
            None => self.store.tile_builder().await?,
        };
        catch_up_tiles(&self.store, &mut tiles, None)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let size = tiles.size();
        let root = tiles.root();
        self.tiles = Some(tiles);
        // another replica may have signed a larger one
        self.follow().await?;
        if size <= self.latest {
            return Ok(None);
        }
        let stored = self.store.tiles_root(size).await?;
        if stored != root {
            // Tiles changed under this broker: resume from them next time,
            // and sign nothing they cannot prove.
            self.tiles = None;
            return Err(failed(format!(
                "the stored tiles do not give the tree's root at size {size}; run `jembatan audit verify`"
            )));
        }
        // the lease is checked last: only its holder signs, so no two
        // replicas sign at once
        if !lease.held() {
            return Ok(None);
        }
        let note = Checkpoint::new(self.signer.name(), size, root)
            .sign(&self.signer)
            .map_err(|e| failed(format!("cannot sign the checkpoint at size {size}: {e}")))?;
        let stored = self
            .store
            .add_checkpoint(size, &hex::encode(root), &note)
            .await?;
        self.latest = size;
        if stored {
            jembatan_telemetry::checkpoint_signed(chrono::Utc::now().timestamp());
            self.note.send_replace(Some(note));
            tracing::debug!(size, "checkpoint stored");
            Ok(Some(size))
        } else {
            Ok(None)
        }
    }

    pub(crate) fn latest(&self) -> u64 {
        self.latest
    }

    /// Follows the latest signed checkpoint note.
    pub(crate) fn notes(&self) -> watch::Receiver<Option<String>> {
        self.note.subscribe()
    }
}

/// Signs checkpoints every `every` appended entries or `interval` while
/// this replica holds the checkpoint lease, and otherwise follows those
/// the holder signs.
pub(crate) async fn run(
    checkpointer: Arc<Mutex<Checkpointer>>,
    every: u64,
    interval: Duration,
    mut appended: watch::Receiver<u64>,
    replica: Arc<Replica>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = appended.changed() => {
                if changed.is_err() {
                    return;
                }
                let size = *appended.borrow_and_update();
                if size < checkpointer.lock().await.latest().saturating_add(every) {
                    continue;
                }
            }
        }
        let mut checkpointer = checkpointer.lock().await;
        let done = if replica.checkpoint.held() {
            checkpointer.checkpoint(&replica.checkpoint).await.map(drop)
        } else {
            checkpointer.follow().await
        };
        drop(checkpointer);
        if let Err(err) = done {
            tracing::error!(error = %err, "checkpoint failed");
        }
        tick.reset();
    }
}

/// `<file>.pub`, beside the key file.
pub(crate) fn public_key_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".pub");
    PathBuf::from(name)
}

/// Reads the checkpoint signer key, creating one named `origin` (mode 0600,
/// with `<file>.pub` holding the verifier key) when the file does not exist.
pub(crate) fn load_or_create_signer(path: &Path, origin: &str) -> Result<Signer, BrokerError> {
    let err = |message: String| BrokerError::CheckpointKey {
        path: path.display().to_string(),
        message,
    };
    let signer = match std::fs::read_to_string(path) {
        Ok(text) => {
            let signer =
                Signer::from_key_string(text.trim()).map_err(|e| err(format!("not a key: {e}")))?;
            if signer.name() != origin {
                return Err(err(format!(
                    "key is named {:?} but log_origin is {origin:?}",
                    signer.name()
                )));
            }
            signer
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let signer =
                Signer::generate(origin, &mut rand::rng()).map_err(|e| err(e.to_string()))?;
            jembatan_pki::files::create_secret(path, (signer.to_key_string() + "\n").as_bytes())
                .map_err(|e| err(e.to_string()))?;
            signer
        }
        Err(e) => return Err(err(e.to_string())),
    };
    let public = public_key_path(path);
    if !public.exists() {
        let verifier: Verifier = signer.verifier();
        jembatan_pki::files::write_public(&public, (verifier.to_key_string() + "\n").as_bytes())
            .map_err(|e| BrokerError::CheckpointKey {
                path: public.display().to_string(),
                message: e.to_string(),
            })?;
    }
    Ok(signer)
}
