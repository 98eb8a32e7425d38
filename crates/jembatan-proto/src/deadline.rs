//! The caller's deadline as gRPC carries it: the `grpc-timeout` header,
//! read the same way by the broker (which passes a consumer's deadline on
//! to the adapter) and by the adapter (which stops its statement at it).

use std::time::Duration;

use tonic::metadata::MetadataMap;

/// The caller's deadline from the `grpc-timeout` header: at most eight
/// digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`). A malformed header is
/// ignored, as tonic's own deadline handling does.
pub fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let unit_at = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at(unit_at);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_headers() {
        let cases = [
            ("1S", Some(Duration::from_secs(1))),
            ("250m", Some(Duration::from_millis(250))),
            ("2M", Some(Duration::from_secs(120))),
            ("1H", Some(Duration::from_secs(3600))),
            ("99999999u", Some(Duration::from_micros(99_999_999))),
            ("5n", Some(Duration::from_nanos(5))),
            ("123456789S", None),
            ("S", None),
            ("", None),
            ("10s", None),
            ("-1S", None),
            ("5 S", None),
            ("1.5S", None),
            ("\u{ff11}S", None),
        ];
        for (header, want) in cases {
            let mut md = MetadataMap::new();
            if let Ok(v) = header.parse() {
                md.insert("grpc-timeout", v);
            }
            assert_eq!(grpc_timeout(&md), want, "{header:?}");
        }
        assert_eq!(grpc_timeout(&MetadataMap::new()), None);
    }
}
