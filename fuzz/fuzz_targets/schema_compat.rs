//! Schema documents and the compatibility checker: two texts →
//! `Schema::parse` each → `compat::check_pair` both ways and
//! `compat::check` in every mode, plus samples and validation.
//!
//! Input: the two texts separated by the first NUL byte (without one, the
//! text is compared with itself).
//!
//! Asserts: nothing panics, overflows the stack or hangs (libFuzzer's
//! `-timeout` catches slow inputs); a schema is compatible with itself in
//! every direction; every counterexample is accepted by the writer schema
//! and refused by the reader schema.

#![no_main]

use jembatan_schema::{
    CheckOptions, CompatMode, Direction, Schema, check, check_pair, explain, samples,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (a, b) = match data.iter().position(|&c| c == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let (Ok(a), Ok(b)) = (std::str::from_utf8(a), std::str::from_utf8(b)) else {
        return;
    };
    let old = Schema::parse(a);
    let new = if a == b {
        old.clone()
    } else {
        Schema::parse(b)
    };
    let (Ok(old), Ok(new)) = (old, new) else {
        return;
    };
    for s in [&old, &new] {
        for v in samples(s) {
            assert!(s.is_valid(&v), "a sample the schema refuses: {v}");
        }
        for direction in [Direction::Backward, Direction::Forward] {
            let found = check_pair(s, s, direction, &CheckOptions::default());
            assert!(
                found.is_empty(),
                "a schema is incompatible with itself: {:?}",
                found.iter().map(explain).collect::<Vec<_>>()
            );
        }
    }
    for optional_friendly in [false, true] {
        let opts = CheckOptions { optional_friendly };
        for direction in [Direction::Backward, Direction::Forward] {
            for inc in check_pair(&old, &new, direction, &opts) {
                let _ = explain(&inc);
                if let Some(doc) = &inc.counterexample {
                    let (writer, reader) = match direction {
                        Direction::Backward => (&old, &new),
                        Direction::Forward => (&new, &old),
                    };
                    assert!(
                        writer.is_valid(doc),
                        "counterexample {doc} refused by the writer"
                    );
                    assert!(
                        !reader.is_valid(doc),
                        "counterexample {doc} accepted by the reader"
                    );
                }
            }
        }
    }
    let previous = [(1, old.clone()), (2, new.clone())];
    for mode in CompatMode::ALL {
        let _ = check(mode, &new, &previous, &CheckOptions::default());
    }
});
