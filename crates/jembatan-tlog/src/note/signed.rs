//! The signed-note envelope: `Note` (text plus signature lines), its strict
//! parser, encoder, signing and verification.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::{
    MAX_NOTE_SIZE, MAX_SIGNATURES, NoteError, SIGNATURE_PREFIX, Signer, Verifier, check_text,
    is_valid_key_name,
};

/// One signature line of a note: `— <name> <base64(key_id || signature)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Key name.
    pub name: String,
    /// Key ID (first four bytes of the decoded signature, big-endian).
    pub key_id: u32,
    /// The signature proper (the decoded bytes after the key ID; 64 bytes
    /// for Ed25519).
    pub signature: Vec<u8>,
}

impl NoteSignature {
    /// The signature line, without its trailing newline.
    pub fn to_line(&self) -> String {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id.to_be_bytes());
        raw.extend_from_slice(&self.signature);
        format!("{SIGNATURE_PREFIX}{} {}", self.name, STANDARD.encode(raw))
    }

    /// Parses one signature line (without its newline); `line` is its line
    /// number, for errors.
    fn parse(text: &str, line: usize) -> Result<Self, NoteError> {
        let rest = text
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or(NoteError::MissingEmDash { line })?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(NoteError::MalformedSignatureLine { line })?;
        if !is_valid_key_name(name) {
            return Err(NoteError::InvalidSignatureName { line });
        }
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| NoteError::InvalidSignatureBase64 { line })?;
        match raw.split_first_chunk::<4>() {
            Some((id, signature)) if !signature.is_empty() => Ok(Self {
                name: name.to_owned(),
                key_id: u32::from_be_bytes(*id),
                signature: signature.to_vec(),
            }),
            _ => Err(NoteError::SignatureTooShort { line }),
        }
    }
}

/// A signed note: UTF-8 text ending in `\n`, then a blank line, then one or
/// more signature lines.
///
/// [`Note::parse`] checks only the format; [`Note::verify`] checks a
/// signature. `Display` gives the encoded note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl Note {
    /// An unsigned note with `text`, which must be at most
    /// [`MAX_NOTE_SIZE`] bytes, end with `\n` and contain no control
    /// characters other than `\n`.
    pub fn new(text: impl Into<String>) -> Result<Self, NoteError> {
        let text = text.into();
        check_text(text.as_bytes())?;
        Ok(Self {
            text,
            signatures: Vec::new(),
        })
    }

    /// Parses an encoded note, checking that it is well formed (size limit,
    /// UTF-8, no control characters, trailing newline, a blank line before
    /// 1..=[`MAX_SIGNATURES`] well-formed signature lines). Verifies nothing.
    pub fn parse(input: impl AsRef<[u8]>) -> Result<Self, NoteError> {
        let input = check_text(input.as_ref())?;
        // The text ends at the last blank line; it keeps its final "\n".
        let split = input
            .rfind("\n\n")
            .ok_or(NoteError::MissingSignatureBlock)?;
        let (text, sigs) = (&input[..=split], &input[split + 2..]);
        let Some(sigs) = sigs.strip_suffix('\n') else {
            return Err(NoteError::NoSignatures);
        };
        if sigs.bytes().filter(|&b| b == b'\n').count() >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures {
                max: MAX_SIGNATURES,
            });
        }
        let first_line = text.bytes().filter(|&b| b == b'\n').count() + 2;
        let signatures = sigs
            .split('\n')
            .enumerate()
            .map(|(i, line)| NoteSignature::parse(line, first_line + i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The signed text, ending in `\n`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines, in order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Adds `signer`'s signature of the text, replacing any earlier signature
    /// with the same key name and ID.
    pub fn sign(&mut self, signer: &Signer) -> Result<(), NoteError> {
        let sig = NoteSignature {
            name: signer.name().to_owned(),
            key_id: signer.key_id(),
            signature: signer.sign_bytes(self.text.as_bytes()).to_vec(),
        };
        let mut signatures = self.signatures.clone();
        signatures.retain(|s| !(s.name == sig.name && s.key_id == sig.key_id));
        signatures.push(sig);
        let size = self.text.len()
            + 1
            + signatures
                .iter()
                .map(|s| s.to_line().len() + 1)
                .sum::<usize>();
        if signatures.len() > MAX_SIGNATURES || size > MAX_NOTE_SIZE {
            return Err(NoteError::SignatureLimit);
        }
        self.signatures = signatures;
        Ok(())
    }

    /// Checks that the note carries at least one signature line with the
    /// verifier's key name and key ID, and that every such line is a valid
    /// signature of the text. Signatures by other keys are ignored.
    pub fn verify(&self, verifier: &Verifier) -> Result<(), NoteError> {
        let mut found = false;
        for sig in &self.signatures {
            if sig.name != verifier.name() || sig.key_id != verifier.key_id() {
                continue;
            }
            if !verifier.verify_bytes(self.text.as_bytes(), &sig.signature) {
                return Err(NoteError::InvalidSignature {
                    name: sig.name.clone(),
                    key_id: sig.key_id,
                });
            }
            found = true;
        }
        if found {
            Ok(())
        } else {
            Err(NoteError::NoMatchingSignature {
                name: verifier.name().to_owned(),
                key_id: verifier.key_id(),
            })
        }
    }

    /// The encoded note: text, blank line, signature lines.
    pub fn encode(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for sig in &self.signatures {
            f.write_str(&sig.to_line())?;
            f.write_str("\n")?;
        }
        Ok(())
    }
}
