//! Signed notes and checkpoints: bytes → `Note::parse`,
//! `Checkpoint::parse_body` and `Checkpoint::open` with a fixed verifier.
//!
//! Input: the bytes as a whole note, and the same bytes as a checkpoint
//! body. A body that parses is also signed with the fixed key so `open`
//! gets past signature verification.
//!
//! Asserts: a parsed note encodes back to the same bytes; a parsed body
//! re-serializes (`to_body`) to the same bytes, validates, and reopens to
//! the same checkpoint once signed; `open` accepts only what `parse` and
//! `parse_body` accept.

#![no_main]

use std::sync::OnceLock;

use jembatan_tlog::note::{Checkpoint, Note, Signer, Verifier};
use libfuzzer_sys::fuzz_target;

fn keys() -> &'static (Signer, Verifier) {
    static KEYS: OnceLock<(Signer, Verifier)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let signer = Signer::from_seed("fuzz.example/log", &[7; 32]).expect("signer");
        let verifier = signer.verifier();
        (signer, verifier)
    })
}

fuzz_target!(|data: &[u8]| {
    let (signer, verifier) = keys();
    if let Ok(note) = Note::parse(data) {
        assert_eq!(
            note.encode().as_bytes(),
            data,
            "a note does not encode back"
        );
        for sig in note.signatures() {
            let _ = sig.to_line();
        }
        let _ = note.verify(verifier);
        if let Ok(cp) = Checkpoint::open(data, verifier) {
            assert_eq!(
                Checkpoint::parse_body(note.text()).as_ref(),
                Ok(&cp),
                "open and parse_body disagree"
            );
        }
    } else {
        assert!(Checkpoint::open(data, verifier).is_err());
    }
    if let Ok(cp) = Checkpoint::parse_body(data) {
        // the body may omit its final newline; otherwise it is kept exactly
        let body = cp.to_body();
        let exact = data.ends_with(b"\n");
        if exact {
            assert_eq!(
                body.as_bytes(),
                data,
                "a checkpoint body does not re-serialize"
            );
        } else {
            assert_eq!(&body.as_bytes()[..body.len() - 1], data);
        }
        cp.validate().expect("a parsed checkpoint validates");
        if let Ok(signed) = cp.sign(signer) {
            let opened = Checkpoint::open(&signed, verifier).expect("a signed checkpoint opens");
            assert_eq!(opened, cp);
        }
    }
});
