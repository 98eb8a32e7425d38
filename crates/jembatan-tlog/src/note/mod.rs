//! C2SP signed notes (<https://c2sp.org/signed-note>) and transparency-log
//! checkpoints (<https://c2sp.org/tlog-checkpoint>): keys, the note envelope,
//! the checkpoint body, and the errors their strict parsers report.
//!
//! See the [crate documentation](crate) for the wire formats.

mod checkpoint;
mod key;
mod signed;

pub use checkpoint::Checkpoint;
pub use key::{ALG_ED25519, KeyError, Signer, Verifier, is_valid_key_name, key_id};
pub use signed::{Note, NoteSignature};

/// Largest signed note (or checkpoint body) accepted, in bytes: 1 MiB.
pub const MAX_NOTE_SIZE: usize = 1 << 20;

/// Largest number of signature lines accepted in one note.
pub const MAX_SIGNATURES: usize = 100;

/// The em dash (U+2014) and space that start every signature line.
pub const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a note or checkpoint was rejected. Line numbers are 1-based and count
/// lines of the whole input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The input exceeds [`MAX_NOTE_SIZE`].
    #[error("note is {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// Input size in bytes.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The input is not UTF-8.
    #[error("note is not valid UTF-8")]
    InvalidUtf8,
    /// The input contains an ASCII control character other than `\n`
    /// (this includes the `\r` of CRLF line endings).
    #[error("control character {byte:#04x} at byte {offset}")]
    ControlCharacter {
        /// The offending byte.
        byte: u8,
        /// Its offset in the input.
        offset: usize,
    },
    /// The text (or the note) does not end with `\n`.
    #[error("text does not end with a newline")]
    MissingTrailingNewline,
    /// There is no blank line separating text and signatures.
    #[error("no blank line separates the text from the signatures")]
    MissingSignatureBlock,
    /// The signature block is empty.
    #[error("note has no signature lines")]
    NoSignatures,
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("note has more than {max} signature lines")]
    TooManySignatures {
        /// The limit.
        max: usize,
    },
    /// A signature line does not start with an em dash (U+2014) and a space.
    #[error("line {line}: signature line does not start with \"\u{2014} \"")]
    MissingEmDash {
        /// Line number.
        line: usize,
    },
    /// A signature line is not `— <name> <base64>`.
    #[error("line {line}: malformed signature line")]
    MalformedSignatureLine {
        /// Line number.
        line: usize,
    },
    /// A signature line names an invalid key name.
    #[error("line {line}: invalid key name in signature line")]
    InvalidSignatureName {
        /// Line number.
        line: usize,
    },
    /// A signature is not valid standard base64.
    #[error("line {line}: signature is not valid base64")]
    InvalidSignatureBase64 {
        /// Line number.
        line: usize,
    },
    /// A decoded signature is shorter than a key ID plus one byte.
    #[error("line {line}: signature is too short")]
    SignatureTooShort {
        /// Line number.
        line: usize,
    },
    /// A signature carries the verifier's name and key ID but does not verify.
    #[error("invalid signature by {name}+{key_id:08x}")]
    InvalidSignature {
        /// Key name.
        name: String,
        /// Key ID.
        key_id: u32,
    },
    /// No signature line carries the verifier's name and key ID.
    #[error("no signature by {name}+{key_id:08x}")]
    NoMatchingSignature {
        /// Key name.
        name: String,
        /// Key ID.
        key_id: u32,
    },
    /// Adding a signature would exceed a limit.
    #[error("signing would make the note exceed its size or signature limit")]
    SignatureLimit,
    /// A checkpoint body has an empty line (origin, size, root or extension).
    #[error("line {line}: empty line in checkpoint body")]
    EmptyLine {
        /// Line number.
        line: usize,
    },
    /// A checkpoint body has fewer than the three mandatory lines.
    #[error("checkpoint body has {found} lines, needs at least 3")]
    TooFewLines {
        /// Lines found.
        found: usize,
    },
    /// A checkpoint field that must be a single line contains `\n`.
    #[error("checkpoint {field} contains a newline")]
    NewlineInField {
        /// `"origin"` or `"extension"`.
        field: &'static str,
    },
    /// The tree size is not made of ASCII decimal digits only.
    #[error("tree size is not a decimal number")]
    SizeNotDecimal,
    /// The tree size has a leading zero.
    #[error("tree size has a leading zero")]
    SizeLeadingZero,
    /// The tree size does not fit in 64 bits.
    #[error("tree size does not fit in 64 bits")]
    SizeOverflow,
    /// The root hash is not valid (padded, canonical) standard base64.
    #[error("root hash is not valid base64")]
    RootNotBase64,
    /// The root hash does not decode to 32 bytes.
    #[error("root hash is {len} bytes, expected 32")]
    RootLength {
        /// Decoded length.
        len: usize,
    },
}

/// Checks the rules shared by whole notes and note texts: bounded size,
/// UTF-8, no control characters except `\n`, trailing `\n`.
fn check_text(input: &[u8]) -> Result<&str, NoteError> {
    if input.len() > MAX_NOTE_SIZE {
        return Err(NoteError::TooLarge {
            size: input.len(),
            max: MAX_NOTE_SIZE,
        });
    }
    let text = std::str::from_utf8(input).map_err(|_| NoteError::InvalidUtf8)?;
    if let Some((offset, &byte)) = input
        .iter()
        .enumerate()
        .find(|&(_, &b)| b < 0x20 && b != b'\n')
    {
        return Err(NoteError::ControlCharacter { byte, offset });
    }
    if !text.ends_with('\n') {
        return Err(NoteError::MissingTrailingNewline);
    }
    Ok(text)
}
