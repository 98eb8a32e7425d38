//! Ed25519 note keys: `Signer` and `Verifier`, their key-string encodings
//! (as in golang.org/x/mod/sumdb/note) and the C2SP key ID.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Signature-type byte of Ed25519 keys in key strings and key IDs.
pub const ALG_ED25519: u8 = 0x01;

const PRIVATE_KEY_PREFIX: &str = "PRIVATE+KEY+";

/// A key string or key name could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Key names must be non-empty and contain no whitespace, no `+` and no
    /// control characters.
    #[error("invalid key name")]
    InvalidName,
    /// The key string does not have the `name+hash+key` shape (or, for a
    /// signer key, the `PRIVATE+KEY+` prefix).
    #[error("malformed key string")]
    Malformed,
    /// The key hash field is not 8 hexadecimal digits.
    #[error("key hash is not 8 hexadecimal digits")]
    InvalidKeyHash,
    /// The key material is not valid standard base64.
    #[error("key material is not valid base64")]
    InvalidBase64,
    /// The key material is not for Ed25519 (type byte 0x01).
    #[error("unsupported signature algorithm {0:#04x}")]
    UnsupportedAlgorithm(u8),
    /// The key material has the wrong length.
    #[error("Ed25519 key must be 32 bytes, got {0}")]
    WrongKeyLength(usize),
    /// The public key is not a valid Ed25519 point.
    #[error("invalid Ed25519 public key")]
    InvalidPublicKey,
    /// The key hash in the string does not match the name and key.
    #[error("key hash {stated:08x} does not match the computed {computed:08x}")]
    KeyHashMismatch {
        /// Key hash written in the key string.
        stated: u32,
        /// Key hash computed from the name and key.
        computed: u32,
    },
}

/// Whether `name` is a valid note key name: non-empty, and free of Unicode
/// whitespace, `+` and control characters.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// The C2SP key ID of an Ed25519 key: the first four bytes, big-endian, of
/// `SHA-256(name || "\n" || 0x01 || public_key)`.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public_key);
    let digest = h.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

fn check_name(name: &str) -> Result<(), KeyError> {
    if is_valid_key_name(name) {
        Ok(())
    } else {
        Err(KeyError::InvalidName)
    }
}

fn parse_key_hash(hex_hash: &str) -> Result<u32, KeyError> {
    if hex_hash.len() != 8 || !hex_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(KeyError::InvalidKeyHash);
    }
    u32::from_str_radix(hex_hash, 16).map_err(|_| KeyError::InvalidKeyHash)
}

/// Decodes `base64(0x01 || 32 bytes)`.
fn parse_key_material(b64: &str) -> Result<[u8; 32], KeyError> {
    let raw = STANDARD.decode(b64).map_err(|_| KeyError::InvalidBase64)?;
    let Some((&alg, key)) = raw.split_first() else {
        return Err(KeyError::WrongKeyLength(0));
    };
    if alg != ALG_ED25519 {
        return Err(KeyError::UnsupportedAlgorithm(alg));
    }
    key.try_into()
        .map_err(|_| KeyError::WrongKeyLength(key.len()))
}

fn encode_key_material(key: &[u8; 32]) -> String {
    let mut raw = Vec::with_capacity(33);
    raw.push(ALG_ED25519);
    raw.extend_from_slice(key);
    STANDARD.encode(raw)
}

/// Splits `name+hash+key` and checks the name and hash.
fn split_key_string(s: &str) -> Result<(&str, u32, &str), KeyError> {
    let mut parts = s.splitn(3, '+');
    let (Some(name), Some(hash), Some(material)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(KeyError::Malformed);
    };
    check_name(name)?;
    Ok((name, parse_key_hash(hash)?, material))
}

/// An Ed25519 note signer: a key name and a private key.
///
/// The `Debug` output never shows the private key.
#[derive(Clone)]
pub struct Signer {
    name: String,
    key_id: u32,
    key: SigningKey,
}

impl Signer {
    /// A fresh key named `name`, from a cryptographically secure RNG
    /// (e.g. `rand::rng()`).
    pub fn generate<R: rand::CryptoRng + ?Sized>(
        name: &str,
        rng: &mut R,
    ) -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Self::from_seed(name, &seed)
    }

    /// The signer for the Ed25519 private key `seed` (RFC 8032 secret key).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, KeyError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(name, key.verifying_key().as_bytes());
        Ok(Self {
            name: name.to_owned(),
            key_id,
            key,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<hex key hash>+<base64(0x01 || seed)>`,
    /// checking that the key hash matches.
    pub fn from_key_string(s: &str) -> Result<Self, KeyError> {
        let rest = s
            .strip_prefix(PRIVATE_KEY_PREFIX)
            .ok_or(KeyError::Malformed)?;
        let (name, stated, material) = split_key_string(rest)?;
        let signer = Self::from_seed(name, &parse_key_material(material)?)?;
        if signer.key_id != stated {
            return Err(KeyError::KeyHashMismatch {
                stated,
                computed: signer.key_id,
            });
        }
        Ok(signer)
    }

    /// The private key string
    /// `PRIVATE+KEY+<name>+<hex key hash>+<base64(0x01 || seed)>`.
    ///
    /// This is secret material: store it like a password.
    pub fn to_key_string(&self) -> String {
        format!(
            "{PRIVATE_KEY_PREFIX}{}+{:08x}+{}",
            self.name,
            self.key_id,
            encode_key_material(self.key.as_bytes())
        )
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID (see [`key_id`]).
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// The Ed25519 signature of `msg`.
    pub(crate) fn sign_bytes(&self, msg: &[u8]) -> [u8; 64] {
        use ed25519_dalek::Signer as _;
        self.key.sign(msg).to_bytes()
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.key_id))
            .finish_non_exhaustive()
    }
}

impl FromStr for Signer {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_key_string(s)
    }
}

/// An Ed25519 note verifier: a key name and a public key.
///
/// `Display` and [`to_key_string`](Self::to_key_string) give the verifier key
/// string `<name>+<hex key hash>+<base64(0x01 || public key)>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key_id: u32,
    key: VerifyingKey,
}

impl Verifier {
    /// The verifier for the Ed25519 `public_key` named `name`.
    pub fn new(name: &str, public_key: &[u8; 32]) -> Result<Self, KeyError> {
        check_name(name)?;
        let key = VerifyingKey::from_bytes(public_key).map_err(|_| KeyError::InvalidPublicKey)?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, public_key),
            key,
        })
    }

    /// Parses `<name>+<hex key hash>+<base64(0x01 || public key)>`, checking
    /// that the key hash matches.
    pub fn from_key_string(s: &str) -> Result<Self, KeyError> {
        let (name, stated, material) = split_key_string(s)?;
        let verifier = Self::new(name, &parse_key_material(material)?)?;
        if verifier.key_id != stated {
            return Err(KeyError::KeyHashMismatch {
                stated,
                computed: verifier.key_id,
            });
        }
        Ok(verifier)
    }

    /// The verifier key string.
    pub fn to_key_string(&self) -> String {
        self.to_string()
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID (see [`key_id`]).
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Whether `signature` is a valid Ed25519 signature of `msg` by this key
    /// (strict RFC 8032 verification: canonical encodings, no small-order
    /// keys).
    pub fn verify_bytes(&self, msg: &[u8], signature: &[u8]) -> bool {
        Signature::from_slice(signature).is_ok_and(|sig| self.key.verify_strict(msg, &sig).is_ok())
    }
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            encode_key_material(self.key.as_bytes())
        )
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Verifier").field(&self.to_string()).finish()
    }
}

impl FromStr for Verifier {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::from_key_string(s)
    }
}

impl From<&Signer> for Verifier {
    fn from(signer: &Signer) -> Self {
        signer.verifier()
    }
}
