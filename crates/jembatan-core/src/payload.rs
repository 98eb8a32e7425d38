//! The payload hash of an exchange: SHA-256 over its records in order,
//! each followed by a newline (`record 1 \n record 2 \n …`), in lowercase
//! hex. The adapter hashes what it sends, the broker what it delivers
//! (and, when it changes records, what it received); `audit crosscheck`
//! compares them, so every side hashes through [`PayloadHasher`].

use ring::digest::{Context, SHA256};

/// A running payload hash; cheap to clone (to hash a batch tentatively
/// and keep the result only if the batch is sent).
#[derive(Clone)]
pub struct PayloadHasher(Context);

impl std::fmt::Debug for PayloadHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PayloadHasher")
    }
}

impl Default for PayloadHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl PayloadHasher {
    /// The hash of an empty payload, to be extended record by record.
    pub fn new() -> Self {
        Self(Context::new(&SHA256))
    }

    /// Adds one record.
    pub fn update(&mut self, record: &str) {
        self.0.update(record.as_bytes());
        self.0.update(b"\n");
    }

    /// The hash of the records added so far, in lowercase hex.
    pub fn hex(&self) -> String {
        hex::encode(self.0.clone().finish())
    }

    /// The hash of `records`, in lowercase hex.
    pub fn of<S: AsRef<str>>(records: &[S]) -> String {
        let mut hasher = Self::new();
        for r in records {
            hasher.update(r.as_ref());
        }
        hasher.hex()
    }
}

#[cfg(test)]
mod tests {
    use super::PayloadHasher;

    #[test]
    fn payload_hash_is_sha256_of_records_each_ending_in_a_newline() {
        let cases: [(&str, &[&str], &str); 3] = [
            (
                "empty",
                &[],
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
            (
                // printf '{"a":1}\n' | sha256sum
                "one record",
                &[r#"{"a":1}"#],
                "e346432021b04179518d9614f3560ccd71354a4ee101ddcb893d6959a9d6301c",
            ),
            (
                // printf 'a\nb\n' | sha256sum
                "two records",
                &["a", "b"],
                "911169ddaaf146aff539f58c26c489af3b892dff0fe283c1c264c65ae5aa59a2",
            ),
        ];
        for (name, records, want) in cases {
            assert_eq!(PayloadHasher::of(records), want, "{name}");
            let mut running = PayloadHasher::new();
            for r in records {
                running.update(r);
            }
            assert_eq!(running.hex(), want, "{name}, record by record");
        }
        assert_ne!(PayloadHasher::of(&["ab"]), PayloadHasher::of(&["a", "b"]));
    }
}
