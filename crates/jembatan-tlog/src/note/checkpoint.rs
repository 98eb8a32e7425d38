//! The C2SP tlog-checkpoint body (`origin`, tree size, root hash, optional
//! extension lines) and signing/opening it as a signed note.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{Note, NoteError, Signer, Verifier, check_text};
use crate::merkle::Hash;

/// A transparency-log checkpoint: the log's origin, a tree size and the
/// RFC 9162 root hash of the first `size` entries.
///
/// Its body (the signed text) is
///
/// ```text
/// <origin>\n
/// <size, decimal>\n
/// <root, standard base64>\n
/// [<extension line>\n]...
/// ```
///
/// The log's key name conventionally equals the origin; callers should check
/// `origin` against the log they expect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's unique identity, e.g. `jembatan.example/audit`.
    pub origin: String,
    /// Number of entries in the tree.
    pub size: u64,
    /// Merkle tree hash of the first `size` entries.
    pub root: Hash,
    /// Optional extra non-empty lines after the root, kept verbatim.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: impl Into<String>, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.into(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The checkpoint body. Only meaningful for a checkpoint that passes
    /// [`validate`](Self::validate).
    pub fn to_body(&self) -> String {
        let mut body = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        for ext in &self.extensions {
            body.push_str(ext);
            body.push('\n');
        }
        body
    }

    /// Checks that [`to_body`](Self::to_body) is a well-formed body that
    /// parses back to this checkpoint: origin and extensions non-empty single
    /// lines without control characters, body within the size limit.
    pub fn validate(&self) -> Result<(), NoteError> {
        if self.origin.contains('\n') {
            return Err(NoteError::NewlineInField { field: "origin" });
        }
        if self.extensions.iter().any(|e| e.contains('\n')) {
            return Err(NoteError::NewlineInField { field: "extension" });
        }
        Self::parse_body(self.to_body()).map(|_| ())
    }

    /// Parses a checkpoint body strictly: at most 1 MiB of UTF-8 without
    /// control characters other than `\n`, every line terminated by `\n` and
    /// non-empty, a canonical decimal size (no sign, no leading zeros, fits
    /// in `u64`) and a root of exactly 32 bytes in padded standard base64.
    pub fn parse_body(body: impl AsRef<[u8]>) -> Result<Self, NoteError> {
        let body = check_text(body.as_ref())?;
        let body = body.strip_suffix('\n').unwrap_or(body);
        let lines: Vec<&str> = body.split('\n').collect();
        if let Some(i) = lines.iter().position(|l| l.is_empty()) {
            return Err(NoteError::EmptyLine { line: i + 1 });
        }
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(NoteError::TooFewLines { found: lines.len() });
        };
        Ok(Self {
            origin: (*origin).to_owned(),
            size: parse_size(size)?,
            root: parse_root(root)?,
            extensions: extensions.iter().map(|e| (*e).to_owned()).collect(),
        })
    }

    /// Signs the body with `signer` and returns the encoded signed note.
    pub fn sign(&self, signer: &Signer) -> Result<String, NoteError> {
        self.validate()?;
        let mut note = Note::new(self.to_body())?;
        note.sign(signer)?;
        Ok(note.encode())
    }

    /// Parses a signed checkpoint note, requires a valid signature by
    /// `verifier` (see [`Note::verify`]) and parses the body.
    pub fn open(note: impl AsRef<[u8]>, verifier: &Verifier) -> Result<Self, NoteError> {
        let note = Note::parse(note)?;
        note.verify(verifier)?;
        Self::parse_body(note.text())
    }
}

fn parse_size(s: &str) -> Result<u64, NoteError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NoteError::SizeNotDecimal);
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(NoteError::SizeLeadingZero);
    }
    s.parse().map_err(|_| NoteError::SizeOverflow)
}

fn parse_root(s: &str) -> Result<Hash, NoteError> {
    let raw = STANDARD.decode(s).map_err(|_| NoteError::RootNotBase64)?;
    raw.as_slice()
        .try_into()
        .map_err(|_| NoteError::RootLength { len: raw.len() })
}
