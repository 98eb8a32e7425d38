//! Field paths into records: dotted (`address.village_code`, `a\.b` for a
//! literal dot) or JSON-pointer form (`/address/village_code`).

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

/// A path of object keys, from the record's top level down. Never empty
/// once parsed from a document (the empty path is used internally for "the
/// value itself", e.g. an array element in a `filter`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(Vec<String>);

impl FieldPath {
    pub(crate) fn empty() -> Self {
        Self(Vec::new())
    }

    pub(crate) fn from_segments(segments: &[String]) -> Self {
        Self(segments.to_vec())
    }

    pub(crate) fn child(&self, key: &str) -> Self {
        let mut v = self.0.clone();
        v.push(key.to_owned());
        Self(v)
    }

    /// The keys, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The top-level key, if any.
    pub fn first(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }

    /// Whether `self` is `other` or lies inside it.
    pub(crate) fn starts_with(&self, other: &FieldPath) -> bool {
        self.0.starts_with(&other.0)
    }

    /// The value at this path; `None` when a key is missing or an
    /// intermediate value is not an object.
    pub(crate) fn lookup<'a>(&self, record: &'a Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.0.split_first()?;
        let mut v = record.get(first)?;
        for key in rest {
            v = v.as_object()?.get(key)?;
        }
        Some(v)
    }

    /// Like [`lookup`](Self::lookup) but starting from any value; the empty
    /// path yields the value itself.
    pub(crate) fn lookup_value<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        let mut v = value;
        for key in &self.0 {
            v = v.as_object()?.get(key)?;
        }
        Some(v)
    }
}

/// Why a path could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path {path:?}: {reason}")]
pub struct PathError {
    pub path: String,
    pub reason: &'static str,
}

impl FromStr for FieldPath {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| PathError {
            path: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(err("path is empty"));
        }
        let segments = if let Some(pointer) = s.strip_prefix('/') {
            pointer
                .split('/')
                .map(|seg| {
                    let mut out = String::with_capacity(seg.len());
                    let mut chars = seg.chars();
                    while let Some(c) = chars.next() {
                        if c == '~' {
                            match chars.next() {
                                Some('0') => out.push('~'),
                                Some('1') => out.push('/'),
                                _ => return Err(err("'~' must be followed by 0 or 1")),
                            }
                        } else {
                            out.push(c);
                        }
                    }
                    Ok(out)
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            let mut segments = Vec::new();
            let mut cur = String::new();
            let mut chars = s.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(e @ ('.' | '\\')) => cur.push(e),
                        _ => return Err(err("'\\' must be followed by '.' or '\\'")),
                    },
                    '.' => segments.push(std::mem::take(&mut cur)),
                    c => cur.push(c),
                }
            }
            segments.push(cur);
            segments
        };
        if segments.iter().any(String::is_empty) {
            return Err(err("path has an empty segment"));
        }
        Ok(Self(segments))
    }
}

/// The canonical dotted form, escaping `.` and `\` inside keys.
impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            for c in seg.chars() {
                if c == '.' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dotted_escaped_and_pointer_paths() {
        let cases: &[(&str, Option<&[&str]>, &str)] = &[
            ("nik", Some(&["nik"]), "nik"),
            ("address.rt", Some(&["address", "rt"]), "address.rt"),
            (r"a\.b", Some(&["a.b"]), r"a\.b"),
            (r"a\\.b", Some(&["a\\", "b"]), r"a\\.b"),
            ("/a.b/c", Some(&["a.b", "c"]), r"a\.b.c"),
            ("/a~1b/c~0", Some(&["a/b", "c~"]), "a/b.c~"),
            ("", None, ""),
            ("a..b", None, ""),
            ("a.", None, ""),
            (r"a\b", None, ""),
            ("/", None, ""),
            ("/a~2", None, ""),
        ];
        for (input, want, canonical) in cases {
            let got = input.parse::<FieldPath>();
            match want {
                Some(segs) => {
                    let p = got.unwrap_or_else(|e| panic!("{input}: {e}"));
                    assert_eq!(p.segments(), *segs, "{input}");
                    assert_eq!(p.to_string(), *canonical, "{input}");
                    assert_eq!(p.to_string().parse::<FieldPath>().unwrap(), p);
                }
                None => assert!(got.is_err(), "{input} should not parse"),
            }
        }
    }
}
