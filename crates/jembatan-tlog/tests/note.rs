//! Signed-note and checkpoint tests: known answers from the Go reference
//! implementation and the C2SP spec, round trips, tampering, malformed
//! inputs (each with its specific error), limits, and no-panic fuzzing.

use jembatan_tlog::merkle::Hash;
use jembatan_tlog::note::{
    Checkpoint, KeyError, MAX_NOTE_SIZE, MAX_SIGNATURES, Note, NoteError, Signer, Verifier, key_id,
};
use proptest::prelude::*;
use rand::SeedableRng;

// golang.org/x/mod/sumdb/note's documented example key and note.
const GO_SKEY: &str =
    "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                       then you don't know what your problem is.\n";
const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
                       then you don't know what your problem is.\n\
                       \n\
                       \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

// The example of https://c2sp.org/signed-note.
const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
const SPEC_NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

// This crate's documented example (also checked by an independent Python
// Ed25519 implementation when it was produced).
const DOC_SKEY: &str =
    "PRIVATE+KEY+jembatan.example/audit+bab16987+AUJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJC";
const DOC_VKEY: &str =
    "jembatan.example/audit+bab16987+ASFS+NGbeR0kRTJC4V8uq2y3z/p7al7TAJeWDgaYgdsS";
const DOC_NOTE: &str = "jembatan.example/audit\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n\u{2014} jembatan.example/audit urFph22v3a9yeVFLkytlUcbj5MaZi13Am1LbTTPl5e/RYEJu4JW8x8un9hFudCjI7fFzF40LzWmVu9F4HpxB3CtyqQo=\n";
const CT_ROOT_8: &str = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328";

fn rng() -> rand_chacha::ChaCha20Rng {
    rand_chacha::ChaCha20Rng::seed_from_u64(7)
}

fn root_bytes(hex_str: &str) -> Hash {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out).unwrap();
    out
}

fn sample() -> (Signer, Checkpoint, String) {
    let signer = Signer::generate("log.example/audit", &mut rng()).unwrap();
    let cp = Checkpoint::new("log.example/audit", 123_456, [0xab; 32]);
    let note = cp.sign(&signer).unwrap();
    (signer, cp, note)
}

#[test]
fn go_reference_vector() {
    let signer = Signer::from_key_string(GO_SKEY).unwrap();
    assert_eq!(signer.name(), "PeterNeumann");
    assert_eq!(signer.key_id(), 0xc74f20a3);
    assert_eq!(signer.to_key_string(), GO_SKEY);
    assert_eq!(signer.verifier().to_key_string(), GO_VKEY);

    let mut note = Note::new(GO_TEXT).unwrap();
    note.sign(&signer).unwrap();
    assert_eq!(note.encode(), GO_NOTE);

    let verifier: Verifier = GO_VKEY.parse().unwrap();
    assert_eq!(
        verifier.key_id(),
        key_id("PeterNeumann", &verifier.public_key())
    );
    let parsed = Note::parse(GO_NOTE).unwrap();
    assert_eq!(parsed.text(), GO_TEXT);
    parsed.verify(&verifier).unwrap();
    assert_eq!(parsed, note);
}

#[test]
fn spec_vector() {
    let verifier = Verifier::from_key_string(SPEC_VKEY).unwrap();
    assert_eq!(verifier.to_string(), SPEC_VKEY);
    let note = Note::parse(SPEC_NOTE).unwrap();
    assert_eq!(note.text(), "This is an example message.\n");
    note.verify(&verifier).unwrap();
    assert_eq!(note.encode(), SPEC_NOTE);
}

#[test]
fn documented_checkpoint_vector() {
    let signer: Signer = DOC_SKEY.parse().unwrap();
    assert_eq!(signer.verifier().to_string(), DOC_VKEY);
    let cp = Checkpoint::new("jembatan.example/audit", 8, root_bytes(CT_ROOT_8));
    assert_eq!(cp.sign(&signer).unwrap(), DOC_NOTE);
    let verifier: Verifier = DOC_VKEY.parse().unwrap();
    assert_eq!(Checkpoint::open(DOC_NOTE, &verifier).unwrap(), cp);
}

#[test]
fn round_trip_with_extensions_and_cosignature() {
    let mut rng = rng();
    let log = Signer::generate("log.example/audit", &mut rng).unwrap();
    let witness = Signer::generate("witness.example/w1", &mut rng).unwrap();
    let mut cp = Checkpoint::new("log.example/audit", 0, jembatan_tlog::merkle::empty_root());
    cp.extensions = vec!["Timestamp: 1700000000".into(), "x y z \u{2014} ok".into()];
    let text = cp.sign(&log).unwrap();
    assert_eq!(Checkpoint::open(&text, &log.verifier()).unwrap(), cp);
    assert_eq!(Checkpoint::parse_body(cp.to_body()).unwrap(), cp);

    // A cosignature by another key: each verifier finds its own signature,
    // the other one is ignored.
    let mut note = Note::parse(&text).unwrap();
    note.sign(&witness).unwrap();
    let cosigned = note.encode();
    assert_eq!(Checkpoint::open(&cosigned, &log.verifier()).unwrap(), cp);
    assert_eq!(
        Checkpoint::open(&cosigned, &witness.verifier()).unwrap(),
        cp
    );
    // Re-signing replaces rather than duplicates.
    note.sign(&witness).unwrap();
    assert_eq!(note.signatures().len(), 2);
    // Bytes work as well as strings.
    assert_eq!(
        Checkpoint::open(cosigned.as_bytes(), &witness.verifier()).unwrap(),
        cp
    );
}

#[test]
fn key_strings_round_trip() {
    let signer = Signer::generate("a.example/log", &mut rng()).unwrap();
    let again = Signer::from_key_string(&signer.to_key_string()).unwrap();
    assert_eq!(again.verifier(), signer.verifier());
    let verifier = Verifier::from_key_string(&signer.verifier().to_key_string()).unwrap();
    assert_eq!(verifier, Verifier::from(&signer));
    assert!(!format!("{signer:?}").contains(&signer.to_key_string()[30..]));
}

#[test]
fn bad_key_strings() {
    let (vname, vhash, vkey) = (
        "PeterNeumann",
        "c74f20a3",
        "ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    );
    let cases: Vec<(String, KeyError)> = vec![
        (format!("{vname}+{vhash}"), KeyError::Malformed),
        (format!("+{vhash}+{vkey}"), KeyError::InvalidName),
        (
            format!("Peter Neumann+{vhash}+{vkey}"),
            KeyError::InvalidName,
        ),
        (format!("{vname}+c74f20a+{vkey}"), KeyError::InvalidKeyHash),
        (format!("{vname}+c74f20ag+{vkey}"), KeyError::InvalidKeyHash),
        (format!("{vname}++74f20a3+{vkey}"), KeyError::InvalidKeyHash),
        (
            format!("{vname}+c74f20a4+{vkey}"),
            KeyError::KeyHashMismatch {
                stated: 0xc74f20a4,
                computed: 0xc74f20a3,
            },
        ),
        (format!("{vname}+{vhash}+!!!!"), KeyError::InvalidBase64),
        (
            format!("{vname}+{vhash}+AhpcAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            KeyError::UnsupportedAlgorithm(2),
        ),
        (format!("{vname}+{vhash}+ARpc"), KeyError::WrongKeyLength(2)),
        (format!("{vname}+{vhash}+"), KeyError::WrongKeyLength(0)),
    ];
    for (s, want) in cases {
        assert_eq!(Verifier::from_key_string(&s), Err(want), "{s}");
    }
    assert_eq!(
        Signer::from_key_string(GO_VKEY).map(|_| ()),
        Err(KeyError::Malformed)
    );
    assert_eq!(
        Signer::from_key_string(
            "PRIVATE+KEY+PeterNeumann+00000000+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
        )
        .map(|_| ()),
        Err(KeyError::KeyHashMismatch {
            stated: 0,
            computed: 0xc74f20a3
        })
    );
    assert_eq!(
        Signer::generate("bad+name", &mut rng()).map(|_| ()),
        Err(KeyError::InvalidName)
    );
    assert_eq!(
        Signer::from_seed("", &[0; 32]).map(|_| ()),
        Err(KeyError::InvalidName)
    );
}

#[test]
fn tampering_fails() {
    let (signer, cp, note) = sample();
    let v = signer.verifier();
    let bad_sig = NoteError::InvalidSignature {
        name: signer.name().into(),
        key_id: signer.key_id(),
    };
    // Change the size, root and origin in the signed text.
    let tampered_size = note.replace("\n123456\n", "\n123457\n");
    assert_eq!(Checkpoint::open(&tampered_size, &v), Err(bad_sig.clone()));
    let root_b64 = "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=";
    assert!(note.contains(root_b64));
    let tampered_root = note.replace(root_b64, "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6o=");
    assert_eq!(Checkpoint::open(&tampered_root, &v), Err(bad_sig.clone()));
    let tampered_origin = note.replacen("log.example/audit\n", "log.example/audiT\n", 1);
    assert_eq!(Checkpoint::open(&tampered_origin, &v), Err(bad_sig.clone()));

    // Change one byte of the signature itself (keeping the key ID).
    let mut parsed = Note::parse(&note).unwrap();
    let mut sigs = parsed.signatures().to_vec();
    sigs[0].signature[10] ^= 1;
    let line = sigs[0].to_line();
    let text = parsed.text().to_owned();
    let forged = format!("{text}\n{line}\n");
    assert_eq!(Checkpoint::open(&forged, &v), Err(bad_sig.clone()));
    // A truncated signature with the right key ID is also invalid.
    sigs[0].signature.truncate(63);
    let forged = format!("{text}\n{}\n", sigs[0].to_line());
    assert_eq!(Checkpoint::open(&forged, &v), Err(bad_sig.clone()));

    // A good signature followed by a bad one from the same key is rejected.
    parsed.sign(&signer).unwrap();
    sigs[0].signature = parsed.signatures()[0].signature.clone();
    sigs[0].signature[0] ^= 0x80;
    let forged = format!("{}{}\n", note, sigs[0].to_line());
    assert_eq!(Checkpoint::open(&forged, &v), Err(bad_sig));

    // Unchanged, it opens.
    assert_eq!(Checkpoint::open(&note, &v).unwrap(), cp);
}

#[test]
fn wrong_key_fails() {
    let (signer, _, note) = sample();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(99);
    // Same name, different key: different key ID, so no matching signature.
    let impostor = Signer::generate(signer.name(), &mut rng).unwrap();
    assert_eq!(
        Checkpoint::open(&note, &impostor.verifier()),
        Err(NoteError::NoMatchingSignature {
            name: signer.name().into(),
            key_id: impostor.key_id(),
        })
    );
    // Different name.
    let other = Signer::generate("other.example/log", &mut rng).unwrap();
    assert!(matches!(
        Checkpoint::open(&note, &other.verifier()),
        Err(NoteError::NoMatchingSignature { .. })
    ));
    // A note signed only by unknown keys.
    let unknown_only = Checkpoint::new("x", 1, [0; 32]).sign(&other).unwrap();
    assert!(matches!(
        Checkpoint::open(&unknown_only, &signer.verifier()),
        Err(NoteError::NoMatchingSignature { .. })
    ));
}

/// Signs `body` as a raw note text (bypassing checkpoint validation), so the
/// body-level errors are reached after a valid signature.
fn signed_raw(body: &str, signer: &Signer) -> String {
    let mut n = Note::new(body).unwrap();
    n.sign(signer).unwrap();
    n.encode()
}

#[test]
fn malformed_inputs_are_rejected_specifically() {
    let (signer, _, note) = sample();
    let v = signer.verifier();
    let sig_line = note.lines().last().unwrap().to_owned();
    let root = "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=";
    let root31 = "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urqw==";

    let envelope_cases: Vec<(&str, String, NoteError)> = vec![
        (
            "missing blank line",
            note.replacen("\n\n", "\n", 1),
            NoteError::MissingSignatureBlock,
        ),
        (
            "missing trailing newline",
            note.trim_end_matches('\n').to_owned(),
            NoteError::MissingTrailingNewline,
        ),
        (
            "CRLF line endings",
            note.replace('\n', "\r\n"),
            NoteError::ControlCharacter {
                byte: b'\r',
                offset: note.find('\n').unwrap(),
            },
        ),
        (
            "tab",
            note.replacen("log", "lo\tg", 1),
            NoteError::ControlCharacter {
                byte: b'\t',
                offset: 2,
            },
        ),
        (
            "NUL",
            format!("\0{note}"),
            NoteError::ControlCharacter { byte: 0, offset: 0 },
        ),
        (
            "em dash missing",
            note.replace('\u{2014}', "-"),
            NoteError::MissingEmDash { line: 5 },
        ),
        (
            "en dash instead of em dash",
            note.replace('\u{2014}', "\u{2013}"),
            NoteError::MissingEmDash { line: 5 },
        ),
        (
            "no space after em dash",
            note.replace("\u{2014} ", "\u{2014}"),
            NoteError::MissingEmDash { line: 5 },
        ),
        (
            "no signature lines",
            format!("{}\n", cp_body(&note)),
            NoteError::NoSignatures,
        ),
        (
            "signature line without base64",
            format!("{}\n\u{2014} log.example/audit\n", cp_body(&note)),
            NoteError::MalformedSignatureLine { line: 5 },
        ),
        (
            "bad base64 in signature",
            format!("{}\n\u{2014} log.example/audit ***\n", cp_body(&note)),
            NoteError::InvalidSignatureBase64 { line: 5 },
        ),
        (
            "unpadded base64 in signature",
            format!("{}\n{}\n", cp_body(&note), sig_line.trim_end_matches('=')),
            NoteError::InvalidSignatureBase64 { line: 5 },
        ),
        (
            "signature shorter than a key ID",
            format!("{}\n\u{2014} log.example/audit AAAAAA==\n", cp_body(&note)),
            NoteError::SignatureTooShort { line: 5 },
        ),
        (
            "key name with plus",
            format!("{}\n\u{2014} log+x AAAAAAA=\n", cp_body(&note)),
            NoteError::InvalidSignatureName { line: 5 },
        ),
        (
            "empty key name",
            format!("{}\n\u{2014}  AAAAAAA=\n", cp_body(&note)),
            NoteError::InvalidSignatureName { line: 5 },
        ),
        (
            "invalid UTF-8",
            // Not representable as a &str: checked below with bytes.
            String::new(),
            NoteError::InvalidUtf8,
        ),
    ];
    for (what, input, want) in envelope_cases {
        let got = if what == "invalid UTF-8" {
            let mut bytes = note.clone().into_bytes();
            bytes[1] = 0xff;
            Checkpoint::open(&bytes, &v)
        } else {
            Checkpoint::open(&input, &v)
        };
        assert_eq!(got, Err(want), "{what}");
    }

    // Body-level errors, reached with a valid signature over the bad body.
    let body_cases: Vec<(&str, String, NoteError)> = vec![
        (
            "leading zeros",
            format!("o\n0123\n{root}\n"),
            NoteError::SizeLeadingZero,
        ),
        (
            "double zero",
            format!("o\n00\n{root}\n"),
            NoteError::SizeLeadingZero,
        ),
        (
            "negative size",
            format!("o\n-1\n{root}\n"),
            NoteError::SizeNotDecimal,
        ),
        (
            "plus sign",
            format!("o\n+1\n{root}\n"),
            NoteError::SizeNotDecimal,
        ),
        (
            "hex size",
            format!("o\n0x10\n{root}\n"),
            NoteError::SizeNotDecimal,
        ),
        (
            "spaced size",
            format!("o\n 1\n{root}\n"),
            NoteError::SizeNotDecimal,
        ),
        (
            "unicode digit size",
            format!("o\n\u{0661}\n{root}\n"),
            NoteError::SizeNotDecimal,
        ),
        (
            "overflowing size",
            format!("o\n18446744073709551616\n{root}\n"),
            NoteError::SizeOverflow,
        ),
        (
            "bad base64 root",
            format!("o\n1\n{}\n", &root[1..]),
            NoteError::RootNotBase64,
        ),
        (
            "non-canonical base64 root",
            format!("o\n1\n{}\n", root.replace("q6s=", "q6t=")),
            NoteError::RootNotBase64,
        ),
        (
            "31-byte root",
            format!("o\n1\n{root31}\n"),
            NoteError::RootLength { len: 31 },
        ),
        (
            "33-byte root",
            "o\n1\nq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6ur\n".to_owned(),
            NoteError::RootLength { len: 33 },
        ),
        (
            "missing root",
            "o\n1\n".to_owned(),
            NoteError::TooFewLines { found: 2 },
        ),
        (
            "empty origin",
            format!("\n1\n{root}\n"),
            NoteError::EmptyLine { line: 1 },
        ),
        (
            "blank line in extensions",
            format!("o\n1\n{root}\next\n\nmore\n"),
            NoteError::EmptyLine { line: 5 },
        ),
    ];
    for (what, body, want) in body_cases {
        let signed = signed_raw(&body, &signer);
        assert_eq!(Checkpoint::open(&signed, &v), Err(want.clone()), "{what}");
        assert_eq!(
            Checkpoint::parse_body(&body),
            Err(want),
            "{what} (body only)"
        );
    }
    // The maximum size is accepted.
    let max = Checkpoint::parse_body(format!("o\n18446744073709551615\n{root}\n")).unwrap();
    assert_eq!(max.size, u64::MAX);
    assert_eq!(
        Checkpoint::parse_body(format!("o\n0\n{root}\n"))
            .unwrap()
            .size,
        0
    );
}

/// The body of a signed note (everything before the blank line).
fn cp_body(note: &str) -> &str {
    &note[..note.find("\n\n").unwrap() + 1]
}

#[test]
fn limits() {
    let (signer, cp, note) = sample();
    let v = signer.verifier();

    // More than 1 MiB.
    let mut huge = cp.clone();
    huge.extensions = vec!["x".repeat(MAX_NOTE_SIZE)];
    assert!(matches!(huge.validate(), Err(NoteError::TooLarge { .. })));
    assert!(matches!(
        huge.sign(&signer),
        Err(NoteError::TooLarge { .. })
    ));
    let padded = format!("{}{}", " ".repeat(MAX_NOTE_SIZE), note);
    assert!(matches!(
        Checkpoint::open(&padded, &v),
        Err(NoteError::TooLarge { .. })
    ));

    // More than 100 signature lines (the extra ones by unknown keys).
    let unknown = "\u{2014} other.example AAAAAAAA\n";
    let at_limit = format!("{note}{}", unknown.repeat(MAX_SIGNATURES - 1));
    assert_eq!(Checkpoint::open(&at_limit, &v).unwrap(), cp);
    let over_limit = format!("{note}{}", unknown.repeat(MAX_SIGNATURES));
    assert_eq!(
        Checkpoint::open(&over_limit, &v),
        Err(NoteError::TooManySignatures {
            max: MAX_SIGNATURES
        })
    );
    // Signing refuses to go over the limit.
    let mut n = Note::parse(&at_limit).unwrap();
    let extra = Signer::generate("one.more", &mut rng()).unwrap();
    assert_eq!(n.sign(&extra), Err(NoteError::SignatureLimit));
    // Replacing an existing signature stays within it.
    n.sign(&signer).unwrap();
}

#[test]
fn invalid_checkpoints_cannot_be_signed() {
    let (signer, cp, _) = sample();
    let mut bad = cp.clone();
    bad.origin = "two\nlines".into();
    assert_eq!(
        bad.sign(&signer),
        Err(NoteError::NewlineInField { field: "origin" })
    );
    let mut bad = cp.clone();
    bad.origin = String::new();
    assert_eq!(bad.sign(&signer), Err(NoteError::EmptyLine { line: 1 }));
    let mut bad = cp.clone();
    bad.extensions = vec![String::new()];
    assert_eq!(bad.sign(&signer), Err(NoteError::EmptyLine { line: 4 }));
    let mut bad = cp.clone();
    bad.extensions = vec!["a\nb".into()];
    assert_eq!(
        bad.sign(&signer),
        Err(NoteError::NewlineInField { field: "extension" })
    );
    let mut bad = cp;
    bad.origin = "tab\there".into();
    assert!(matches!(
        bad.sign(&signer),
        Err(NoteError::ControlCharacter { byte: b'\t', .. })
    ));
    assert!(matches!(
        Note::new("no newline"),
        Err(NoteError::MissingTrailingNewline)
    ));
}

fn fixed() -> &'static (Signer, Checkpoint, String) {
    static CELL: std::sync::OnceLock<(Signer, Checkpoint, String)> = std::sync::OnceLock::new();
    CELL.get_or_init(sample)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let (signer, _, _) = fixed();
        let v = signer.verifier();
        let _ = Checkpoint::open(&bytes, &v);
        let _ = Checkpoint::parse_body(&bytes);
        let _ = Note::parse(&bytes);
    }

    #[test]
    fn arbitrary_strings_never_panic(s in "(?s).{0,300}") {
        let (signer, _, note) = fixed();
        let v = signer.verifier();
        let _ = Checkpoint::open(&s, &v);
        let _ = Checkpoint::parse_body(&s);
        let _ = Verifier::from_key_string(&s);
        let _ = Signer::from_key_string(&s);
        // Also appended to / prepended to a valid note.
        let _ = Checkpoint::open(format!("{note}{s}"), &v);
        let _ = Checkpoint::open(format!("{s}{note}"), &v);
    }

    #[test]
    fn structured_strings_never_panic(
        lines in prop::collection::vec(
            prop_oneof![
                Just(String::new()),
                "[0-9]{0,25}",
                "[A-Za-z0-9+/=]{0,90}",
                "\u{2014} [a-z.+/]{0,12} [A-Za-z0-9+/=]{0,96}",
                "(?s).{0,20}",
            ],
            0..8,
        )
    ) {
        let (signer, _, _) = fixed();
        let v = signer.verifier();
        let joined = lines.join("\n");
        let _ = Checkpoint::open(&joined, &v);
        let _ = Checkpoint::parse_body(&joined);
        let with_nl = format!("{joined}\n");
        let _ = Checkpoint::open(&with_nl, &v);
        let _ = Checkpoint::parse_body(&with_nl);
    }

    #[test]
    fn mutated_notes_never_verify(pos in any::<prop::sample::Index>(), byte in any::<u8>(),
                                  cut in any::<prop::sample::Index>()) {
        let (signer, cp, note) = fixed();
        let v = signer.verifier();
        let mut bytes = note.clone().into_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        match Checkpoint::open(&bytes, &v) {
            Ok(got) => {
                prop_assert_eq!(&bytes, note.as_bytes(), "mutated note verified");
                prop_assert_eq!(&got, cp);
            }
            Err(_) => prop_assert_ne!(&bytes, note.as_bytes()),
        }
        let truncated = &note.as_bytes()[..cut.index(note.len())];
        prop_assert!(Checkpoint::open(truncated, &v).is_err());
    }

    #[test]
    fn checkpoints_round_trip(origin in "[a-z0-9./-]{1,40}", size in any::<u64>(),
                              root in any::<[u8; 32]>(),
                              extensions in prop::collection::vec("[ -~]{1,30}", 0..4)) {
        let (signer, _, _) = fixed();
        let cp = Checkpoint { origin, size, root, extensions };
        let note = cp.sign(signer).unwrap();
        prop_assert_eq!(Checkpoint::open(&note, &signer.verifier()).unwrap(), cp.clone());
        prop_assert_eq!(Checkpoint::parse_body(cp.to_body()).unwrap(), cp);
    }
}
