//! Sealed subscription cursors: a position in a dataset's change order,
//! given to the consumer opaque and authenticated.
//!
//! A position is a change value and a key, and a key is often a NIK: the
//! consumer must not read it from a cursor, forge one to skip ahead or
//! back, nor use one issued to another agency or for another dataset.
//! A cursor is XChaCha20-Poly1305 over the subscription id and the
//! position, with the consumer agency and the dataset as associated data,
//! under a key derived from the broker's audit key, which every replica
//! sharing the store holds: a cursor issued by one replica opens on any
//! other, and on the same broker after a restart.
//!
//! Text form: `c1.` then base64url (no padding) of a random 24-byte nonce
//! followed by the ciphertext and its tag.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use jembatan_core::{AgencyId, DatasetId};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The prefix naming the cursor format.
const PREFIX: &str = "c1.";
/// What the cursor key is derived with, from the audit key.
const KEY_LABEL: &[u8] = b"jembatan.v1 subscription cursor key";
/// Bytes of an XChaCha20 nonce.
const NONCE_BYTES: usize = 24;
/// Longest cursor text accepted: a position of two 1 KiB halves and a
/// subscription id, sealed and encoded, fits with room to spare.
pub const MAX_CURSOR_BYTES: usize = 4096;

/// Where a subscription stands: after this change, of this subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorPosition {
    /// The subscription the cursor belongs to.
    #[serde(rename = "s")]
    pub subscription: String,
    /// The change value of the last change delivered, as JSON text.
    #[serde(rename = "c")]
    pub change: String,
    /// The key of the last change delivered, as JSON text.
    #[serde(rename = "k")]
    pub key: String,
    /// The subscription's last batch recorded when the cursor was issued:
    /// what it holds is rewound to this on resume.
    #[serde(rename = "b")]
    pub batch: u64,
    /// What the subscription reads (schema, fields, filter, purpose), as
    /// a hash: a cursor resumes only the same subscription.
    #[serde(rename = "q")]
    pub scope: String,
}

impl CursorPosition {
    /// Whether the cursor names no change yet: the subscription starts
    /// at the dataset's first change.
    pub fn at_start(&self) -> bool {
        self.change.is_empty() && self.key.is_empty()
    }
}

/// Why a cursor was refused. The words never quote the cursor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("the cursor is not one this broker issues (malformed)")]
    Malformed,
    #[error("the cursor is longer than {MAX_CURSOR_BYTES} bytes")]
    TooLong,
    #[error(
        "the cursor was not issued to this agency for this dataset by this broker, or was altered"
    )]
    NotIssued,
}

/// Seals and opens cursors with the key every replica derives alike.
#[derive(Clone)]
pub struct CursorSealer {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for CursorSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorSealer(..)")
    }
}

impl CursorSealer {
    /// The sealer whose key is derived from the broker's audit key
    /// (HMAC-SHA-256 of a fixed label), so that the audit key's holders —
    /// every replica of one deployment — seal and open alike, and a
    /// cursor key is never the audit key itself.
    pub fn from_audit_key(audit_key: &[u8]) -> CursorSealer {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(audit_key)
            .expect("HMAC accepts keys of any length");
        mac.update(KEY_LABEL);
        let key = mac.finalize().into_bytes();
        let cipher =
            XChaCha20Poly1305::new_from_slice(&key).expect("an HMAC-SHA-256 output is 32 bytes");
        CursorSealer { cipher }
    }

    /// The cursor for `position`, bound to `consumer` and `dataset`.
    pub fn seal(
        &self,
        consumer: &AgencyId,
        dataset: &DatasetId,
        position: &CursorPosition,
    ) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        // a struct of strings always serializes
        let plaintext = serde_json::to_vec(position).unwrap_or_default();
        let aad = associated_data(consumer, dataset);
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &plaintext,
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 seals any message that fits in memory");
        let mut bytes = Vec::with_capacity(NONCE_BYTES + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The position a cursor names, when this broker sealed it for
    /// `consumer` and `dataset` and nothing in it changed.
    pub fn open(
        &self,
        consumer: &AgencyId,
        dataset: &DatasetId,
        cursor: &str,
    ) -> Result<CursorPosition, CursorError> {
        if cursor.len() > MAX_CURSOR_BYTES {
            return Err(CursorError::TooLong);
        }
        let body = cursor.strip_prefix(PREFIX).ok_or(CursorError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| CursorError::Malformed)?;
        if bytes.len() <= NONCE_BYTES {
            return Err(CursorError::Malformed);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
        let nonce = XNonce::try_from(nonce).map_err(|_| CursorError::Malformed)?;
        let aad = associated_data(consumer, dataset);
        let plaintext = self
            .cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| CursorError::NotIssued)?;
        // authenticated: only this broker wrote it, so it parses
        serde_json::from_slice(&plaintext).map_err(|_| CursorError::NotIssued)
    }
}

/// What a cursor is bound to besides its own content.
fn associated_data(consumer: &AgencyId, dataset: &DatasetId) -> Vec<u8> {
    format!("jembatan.v1 cursor\0{consumer}\0{dataset}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position() -> CursorPosition {
        CursorPosition {
            subscription: "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            change: "\"2026-01-05T10:00:00\"".into(),
            key: "\"1507026109070001\"".into(),
            batch: 7,
            scope: "ab".repeat(32),
        }
    }

    fn ids(consumer: &str, dataset: &str) -> (AgencyId, DatasetId) {
        (consumer.parse().unwrap(), dataset.parse().unwrap())
    }

    #[test]
    fn a_cursor_opens_for_its_consumer_and_dataset_on_every_replica() {
        let (dinsos, penduduk) = ids("dinsos", "disdukcapil.penduduk");
        let sealer = CursorSealer::from_audit_key(b"the deployment's audit key");
        let cursor = sealer.seal(&dinsos, &penduduk, &position());
        assert!(cursor.starts_with("c1."), "{cursor}");
        assert!(cursor.len() < 300, "{}", cursor.len());
        // another replica derives the same key from the same audit key
        let replica = CursorSealer::from_audit_key(b"the deployment's audit key");
        assert_eq!(replica.open(&dinsos, &penduduk, &cursor), Ok(position()));
        // the same position sealed twice reads differently
        assert_ne!(cursor, sealer.seal(&dinsos, &penduduk, &position()));
    }

    #[test]
    fn the_key_never_shows_in_a_cursor() {
        let (dinsos, penduduk) = ids("dinsos", "disdukcapil.penduduk");
        let sealer = CursorSealer::from_audit_key(b"k");
        let cursor = sealer.seal(&dinsos, &penduduk, &position());
        let decoded = URL_SAFE_NO_PAD.decode(&cursor[PREFIX.len()..]).unwrap();
        let text = String::from_utf8_lossy(&decoded);
        for clear in ["1507026109070001", "2026-01-05", "0190a1b2"] {
            assert!(!cursor.contains(clear), "{cursor}");
            assert!(!text.contains(clear));
        }
    }

    #[test]
    fn another_agency_dataset_or_broker_cannot_use_a_cursor() {
        let (dinsos, penduduk) = ids("dinsos", "disdukcapil.penduduk");
        let (dinkes, kk) = ids("dinkes", "disdukcapil.kk");
        let sealer = CursorSealer::from_audit_key(b"k");
        let cursor = sealer.seal(&dinsos, &penduduk, &position());
        assert_eq!(
            sealer.open(&dinkes, &penduduk, &cursor),
            Err(CursorError::NotIssued)
        );
        assert_eq!(
            sealer.open(&dinsos, &kk, &cursor),
            Err(CursorError::NotIssued)
        );
        let other = CursorSealer::from_audit_key(b"another deployment");
        assert_eq!(
            other.open(&dinsos, &penduduk, &cursor),
            Err(CursorError::NotIssued)
        );
    }

    #[test]
    fn every_altered_byte_is_refused() {
        let (dinsos, penduduk) = ids("dinsos", "disdukcapil.penduduk");
        let sealer = CursorSealer::from_audit_key(b"k");
        let cursor = sealer.seal(&dinsos, &penduduk, &position());
        let bytes = URL_SAFE_NO_PAD.decode(&cursor[PREFIX.len()..]).unwrap();
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80] {
                let mut altered = bytes.clone();
                altered[i] ^= flip;
                let text = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&altered));
                assert_eq!(
                    sealer.open(&dinsos, &penduduk, &text),
                    Err(CursorError::NotIssued),
                    "byte {i} ^ {flip:#x}"
                );
            }
        }
        // cut short, or with bytes added
        let short = format!(
            "{PREFIX}{}",
            URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() - 1])
        );
        assert_eq!(
            sealer.open(&dinsos, &penduduk, &short),
            Err(CursorError::NotIssued)
        );
        let mut longer = bytes.clone();
        longer.push(0);
        let longer = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&longer));
        assert_eq!(
            sealer.open(&dinsos, &penduduk, &longer),
            Err(CursorError::NotIssued)
        );
    }

    #[test]
    fn malformed_cursors_are_named_as_such() {
        let (dinsos, penduduk) = ids("dinsos", "disdukcapil.penduduk");
        let sealer = CursorSealer::from_audit_key(b"k");
        let cases = [
            ("", CursorError::Malformed),
            ("c1.", CursorError::Malformed),
            ("c2.AAAA", CursorError::Malformed),
            ("c1.not base64!", CursorError::Malformed),
            ("c1.AAAAAAAA", CursorError::Malformed),
        ];
        for (text, want) in cases {
            assert_eq!(sealer.open(&dinsos, &penduduk, text), Err(want), "{text:?}");
        }
        let long = format!("c1.{}", "A".repeat(MAX_CURSOR_BYTES));
        assert_eq!(
            sealer.open(&dinsos, &penduduk, &long),
            Err(CursorError::TooLong)
        );
        // a forged cursor of the right shape
        let forged = format!("c1.{}", URL_SAFE_NO_PAD.encode([7u8; 80]));
        assert_eq!(
            sealer.open(&dinsos, &penduduk, &forged),
            Err(CursorError::NotIssued)
        );
    }
}
