//! A strict reader of the Prometheus text exposition format (version
//! 0.0.4) and a scrape of a process's `GET /metrics`.
//!
//! Strict: every line is a comment, a `# HELP` / `# TYPE` line or a sample;
//! every sample belongs to the family its `# TYPE` line declared before it
//! (with the suffixes its type allows); names, label names, escapes and
//! values are checked; a family is declared once and a series appears
//! once. Anything else is an error naming the line.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The type a `# TYPE` line declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name, suffix included (`…_bucket`, `…_count`).
    pub name: String,
    /// The family it belongs to.
    pub family: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub types: BTreeMap<String, Type>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The sum of the samples named `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// The samples named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => {
            // Rust also takes "inf", "infinity" and "nan": not the format's
            if text
                .chars()
                .any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
            {
                return None;
            }
            text.parse().ok()
        }
    }
}

/// The family a sample named `name` belongs to, given the declared types.
fn family_of(name: &str, types: &BTreeMap<String, Type>) -> Option<String> {
    if types.contains_key(name) {
        let t = types[name];
        // a histogram or summary has no sample of the bare name but a
        // summary's quantiles
        return matches!(
            t,
            Type::Counter | Type::Gauge | Type::Untyped | Type::Summary
        )
        .then(|| name.to_owned());
    }
    for (suffix, allowed) in [
        ("_bucket", &[Type::Histogram][..]),
        ("_sum", &[Type::Histogram, Type::Summary]),
        ("_count", &[Type::Histogram, Type::Summary]),
    ] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| allowed.contains(t))
        {
            return Some(base.to_owned());
        }
    }
    None
}

/// Parses `{a="x",b="y"}`'s inside; returns the labels and the rest of
/// the line after the closing brace.
fn labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(' ');
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("a label without `=` in {text:?}"))?;
        let name = name.trim();
        if !is_label_name(name) {
            return Err(format!("{name:?} is not a label name"));
        }
        let mut chars = after
            .strip_prefix('"')
            .ok_or_else(|| format!("label {name}'s value is not quoted"))?
            .char_indices();
        let mut value = String::new();
        let end = loop {
            match chars.next() {
                None => return Err(format!("label {name}'s value is not closed")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("a bad escape {other:?} in label {name}")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} given twice"));
        }
        rest = &after[1 + end + 1..];
        rest = rest.trim_start_matches(' ');
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err(format!("`,` or `}}` expected after label {name}"));
        }
    }
}

/// Parses an exposition strictly.
pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut out = Exposition::default();
    let mut help = BTreeMap::<String, String>::new();
    let mut series = std::collections::BTreeSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match words.next() {
                Some("TYPE") => {
                    let name = words.next().unwrap_or_default();
                    let kind = match words.next().map(str::trim) {
                        Some("counter") => Type::Counter,
                        Some("gauge") => Type::Gauge,
                        Some("histogram") => Type::Histogram,
                        Some("summary") => Type::Summary,
                        Some("untyped") => Type::Untyped,
                        other => return Err(at(format!("unknown type {other:?}"))),
                    };
                    if !is_name(name) {
                        return Err(at(format!("{name:?} is not a metric name")));
                    }
                    if out.samples.iter().any(|s| s.family == name) {
                        return Err(at(format!("{name} typed after its samples")));
                    }
                    if out.types.insert(name.to_owned(), kind).is_some() {
                        return Err(at(format!("{name} typed twice")));
                    }
                }
                Some("HELP") => {
                    let name = words.next().unwrap_or_default();
                    if !is_name(name) {
                        return Err(at(format!("{name:?} is not a metric name")));
                    }
                    let text = words.next().unwrap_or_default().to_owned();
                    if help.insert(name.to_owned(), text).is_some() {
                        return Err(at(format!("{name} described twice")));
                    }
                }
                _ => {} // a comment
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| at("a sample without a value".into()))?;
        let name = &line[..name_end];
        if !is_name(name) {
            return Err(at(format!("{name:?} is not a metric name")));
        }
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(inside) => labels(inside).map_err(at)?,
            None => (BTreeMap::new(), &line[name_end..]),
        };
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .and_then(value)
            .ok_or_else(|| at("no number as the value".into()))?;
        if let Some(timestamp) = fields.next()
            && timestamp.parse::<i64>().is_err()
        {
            return Err(at(format!("{timestamp:?} is not a timestamp")));
        }
        if fields.next().is_some() {
            return Err(at("more than a value and a timestamp".into()));
        }
        // samples without a TYPE are untyped families of their own
        let family = match family_of(name, &out.types) {
            Some(family) => family,
            None if !out.types.contains_key(name) => {
                out.types.insert(name.to_owned(), Type::Untyped);
                name.to_owned()
            }
            None => return Err(at(format!("{name} does not fit its declared type"))),
        };
        if out.types[&family] == Type::Histogram
            && name.ends_with("_bucket")
            && !labels.contains_key("le")
        {
            return Err(at("a bucket without `le`".into()));
        }
        if matches!(out.types[&family], Type::Counter) && value < 0.0 {
            return Err(at("a negative counter".into()));
        }
        if !series.insert((name.to_owned(), labels.clone())) {
            return Err(at("a series given twice".into()));
        }
        out.samples.push(Sample {
            name: name.to_owned(),
            family,
            labels,
            value,
        });
    }
    Ok(out)
}

/// `GET /metrics` on `127.0.0.1:port`, checked (status 200, the text
/// format's content type) and parsed.
pub async fn scrape(port: u16) -> Exposition {
    let fetch = async {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("the metrics endpoint accepts");
        tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .expect("request sent");
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await.expect("response read");
        response
    };
    let response = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .expect("the metrics endpoint answers within 10 s");
    let response = String::from_utf8(response).expect("a UTF-8 response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("an HTTP response head");
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default();
    assert!(status.starts_with("HTTP/1.1 200 "), "{head}");
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let content_type = headers.get("content-type").map(String::as_str);
    assert_eq!(
        content_type,
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, tail) = rest.split_once("\r\n").expect("a chunk size line");
            let n = usize::from_str_radix(size.trim(), 16).expect("a hexadecimal chunk size");
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].strip_prefix("\r\n").expect("a chunk's CRLF");
        }
        out
    } else {
        let length: usize = headers
            .get("content-length")
            .expect("a length or chunks")
            .parse()
            .expect("a numeric content length");
        assert_eq!(body.len(), length, "the whole body arrived");
        body.to_owned()
    };
    parse(&body).unwrap_or_else(|e| panic!("the exposition does not parse: {e}\n{body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_families_labels_escapes_and_values() {
        let text = "# HELP x_total Things.\n\
                    # TYPE x_total counter\n\
                    x_total{a=\"1\",b=\"q\\\"u\\\\o\\nte\"} 3\n\
                    x_total{a=\"2\"} 4 1700000000000\n\
                    # TYPE d_ms histogram\n\
                    d_ms_bucket{le=\"1\"} 1\n\
                    d_ms_bucket{le=\"+Inf\"} 2\n\
                    d_ms_sum 5.5\n\
                    d_ms_count 2\n\
                    # a comment\n\
                    bare 1e3\n";
        let e = parse(text).unwrap();
        assert_eq!(e.sum("x_total", &[]), 7.0);
        assert_eq!(e.sum("x_total", &[("b", "q\"u\\o\nte")]), 3.0);
        assert_eq!(e.sum("d_ms_count", &[]), 2.0);
        assert_eq!(e.named("d_ms_sum").next().unwrap().family, "d_ms");
        assert_eq!(e.types["bare"], Type::Untyped);
        assert_eq!(e.sum("bare", &[]), 1000.0);
    }

    #[test]
    fn refuses_what_the_format_does_not_allow() {
        for bad in [
            "x 1 2 3",
            "x",
            "x{a=\"1\" 2",
            "x{a=1} 2",
            "x{1a=\"1\"} 2",
            "x{a=\"1\",a=\"2\"} 2",
            "x{a=\"\\t\"} 2",
            "x one",
            "x inf",
            "9x 1",
            "# TYPE x counter\nx -1",
            "# TYPE x nonsense",
            "# TYPE x counter\n# TYPE x counter",
            "# TYPE h histogram\nh 1",
            "# TYPE h histogram\nh_bucket 1",
            "# TYPE c counter\nc_count 1\n# TYPE c_count gauge",
            "x{a=\"1\"} 1\nx{a=\"1\"} 2",
            "x 1\n# TYPE x gauge",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
