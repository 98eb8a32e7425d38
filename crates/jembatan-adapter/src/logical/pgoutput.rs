//! Decoding of PostgreSQL's `pgoutput` messages (protocol version 1), as
//! `pg_logical_slot_peek_binary_changes` returns them one a row: enough to
//! follow transactions and the key of every changed row. Outside input:
//! a malformed message is an error, never a panic.

/// One `pgoutput` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// A transaction starts; its changes follow, then its commit.
    Begin {
        xid: u32,
    },
    /// The transaction commits at `commit_lsn`; the slot may be advanced
    /// to `end_lsn` once it is kept. `time` is microseconds since
    /// 2000-01-01 UTC.
    Commit {
        commit_lsn: u64,
        end_lsn: u64,
        time: i64,
    },
    /// Describes a relation before its first change in a session.
    Relation(Relation),
    Insert {
        relation: u32,
        new: Tuple<'a>,
    },
    /// `old` is the old key (`K`) or the whole old row (`O`, replica
    /// identity full) when the key changed or the identity is full.
    Update {
        relation: u32,
        old: Option<Tuple<'a>>,
        new: Tuple<'a>,
    },
    /// `old` holds the replica identity's columns (the others null), or
    /// the whole row with replica identity full.
    Delete {
        relation: u32,
        old: Tuple<'a>,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Origin, type and other messages the adapter does not need.
    Other(u8),
}

/// A relation as `pgoutput` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relation {
    pub(crate) id: u32,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) columns: Vec<String>,
}

/// One column of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Datum<'a> {
    Null,
    /// An unchanged TOASTed value, not sent.
    Unchanged,
    /// The value's text form.
    Text(&'a [u8]),
}

/// A row's columns in the relation's order.
pub(crate) type Tuple<'a> = Vec<Datum<'a>>;

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput message: {0}")]
pub(crate) struct DecodeError(&'static str);

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn cstr(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError(what))?;
        let s = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Tuple<'a>, DecodeError> {
        let n = self.u16("tuple column count")?;
        let mut cols = Vec::with_capacity(usize::from(n).min(self.buf.len()));
        for _ in 0..n {
            cols.push(match self.u8("tuple column kind")? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => {
                    let len = self.u32("tuple value length")?;
                    let len =
                        usize::try_from(len).map_err(|_| DecodeError("tuple value length"))?;
                    Datum::Text(self.take(len, "tuple value")?)
                }
                _ => return Err(DecodeError("unknown tuple column kind")),
            });
        }
        Ok(cols)
    }
}

/// Decodes one message.
pub(crate) fn decode(data: &[u8]) -> Result<Message<'_>, DecodeError> {
    let mut r = Reader { buf: data };
    let tag = r.u8("empty message")?;
    Ok(match tag {
        b'B' => {
            r.u64("begin final lsn")?;
            r.u64("begin time")?;
            Message::Begin {
                xid: r.u32("begin xid")?,
            }
        }
        b'C' => {
            r.u8("commit flags")?;
            let commit_lsn = r.u64("commit lsn")?;
            let end_lsn = r.u64("commit end lsn")?;
            let time = r.u64("commit time")? as i64;
            Message::Commit {
                commit_lsn,
                end_lsn,
                time,
            }
        }
        b'R' => {
            let id = r.u32("relation id")?;
            let namespace = r.cstr("relation namespace")?;
            let name = r.cstr("relation name")?;
            r.u8("relation replica identity")?;
            let n = r.u16("relation column count")?;
            let mut columns = Vec::with_capacity(usize::from(n).min(r.buf.len()));
            for _ in 0..n {
                r.u8("column flags")?;
                columns.push(r.cstr("column name")?);
                r.u32("column type")?;
                r.u32("column type modifier")?;
            }
            Message::Relation(Relation {
                id,
                namespace,
                name,
                columns,
            })
        }
        b'I' => {
            let relation = r.u32("insert relation")?;
            if r.u8("insert tuple tag")? != b'N' {
                return Err(DecodeError("insert without its new tuple"));
            }
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32("update relation")?;
            let (old, tag) = match r.u8("update tuple tag")? {
                b'K' | b'O' => (Some(r.tuple()?), r.u8("update new tuple tag")?),
                tag => (None, tag),
            };
            if tag != b'N' {
                return Err(DecodeError("update without its new tuple"));
            }
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32("delete relation")?;
            if !matches!(r.u8("delete tuple tag")?, b'K' | b'O') {
                return Err(DecodeError("delete without its old key"));
            }
            Message::Delete {
                relation,
                old: r.tuple()?,
            }
        }
        b'T' => {
            let n = r.u32("truncate relation count")?;
            r.u8("truncate options")?;
            let mut relations = Vec::new();
            for _ in 0..n {
                relations.push(r.u32("truncate relation")?);
            }
            Message::Truncate { relations }
        }
        other => Message::Other(other),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Message builders, for the decoder's tests and the journal's.
    pub(crate) fn begin(xid: u32) -> Vec<u8> {
        let mut m = vec![b'B'];
        m.extend(100u64.to_be_bytes());
        m.extend(0u64.to_be_bytes());
        m.extend(xid.to_be_bytes());
        m
    }

    pub(crate) fn commit(lsn: u64, end: u64) -> Vec<u8> {
        let mut m = vec![b'C', 0];
        m.extend(lsn.to_be_bytes());
        m.extend(end.to_be_bytes());
        m.extend(0u64.to_be_bytes());
        m
    }

    pub(crate) fn relation(id: u32, ns: &str, name: &str, cols: &[&str]) -> Vec<u8> {
        let mut m = vec![b'R'];
        m.extend(id.to_be_bytes());
        for s in [ns, name] {
            m.extend(s.as_bytes());
            m.push(0);
        }
        m.push(b'd');
        m.extend((cols.len() as u16).to_be_bytes());
        for (i, c) in cols.iter().enumerate() {
            m.push(u8::from(i == 0));
            m.extend(c.as_bytes());
            m.push(0);
            m.extend(25u32.to_be_bytes());
            m.extend((-1i32).to_be_bytes());
        }
        m
    }

    pub(crate) fn tuple(values: &[Option<&str>]) -> Vec<u8> {
        let mut m = (values.len() as u16).to_be_bytes().to_vec();
        for v in values {
            match v {
                None => m.push(b'n'),
                Some("\u{0}unchanged") => m.push(b'u'),
                Some(s) => {
                    m.push(b't');
                    m.extend((s.len() as u32).to_be_bytes());
                    m.extend(s.as_bytes());
                }
            }
        }
        m
    }

    pub(crate) fn change(tag: u8, rel: u32, tuples: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend(rel.to_be_bytes());
        for (t, body) in tuples {
            m.push(*t);
            m.extend(body);
        }
        m
    }

    #[test]
    fn messages_decode() {
        assert_eq!(decode(&begin(7)).unwrap(), Message::Begin { xid: 7 });
        assert_eq!(
            decode(&commit(0x10, 0x18)).unwrap(),
            Message::Commit {
                commit_lsn: 0x10,
                end_lsn: 0x18,
                time: 0
            }
        );
        assert_eq!(
            decode(&relation(5, "public", "penduduk", &["nik", "nama"])).unwrap(),
            Message::Relation(Relation {
                id: 5,
                namespace: "public".into(),
                name: "penduduk".into(),
                columns: vec!["nik".into(), "nama".into()],
            })
        );
        let new = tuple(&[Some("3201"), None]);
        assert_eq!(
            decode(&change(b'I', 5, &[(b'N', new.clone())])).unwrap(),
            Message::Insert {
                relation: 5,
                new: vec![Datum::Text(b"3201"), Datum::Null]
            }
        );
        let key = tuple(&[Some("3201"), None]);
        let moved = tuple(&[Some("3202"), Some("\u{0}unchanged")]);
        assert_eq!(
            decode(&change(b'U', 5, &[(b'K', key.clone()), (b'N', moved)])).unwrap(),
            Message::Update {
                relation: 5,
                old: Some(vec![Datum::Text(b"3201"), Datum::Null]),
                new: vec![Datum::Text(b"3202"), Datum::Unchanged]
            }
        );
        assert_eq!(
            decode(&change(b'U', 5, &[(b'N', new)])).unwrap(),
            Message::Update {
                relation: 5,
                old: None,
                new: vec![Datum::Text(b"3201"), Datum::Null]
            }
        );
        assert_eq!(
            decode(&change(b'D', 5, &[(b'K', key)])).unwrap(),
            Message::Delete {
                relation: 5,
                old: vec![Datum::Text(b"3201"), Datum::Null]
            }
        );
        let mut truncate = vec![b'T'];
        truncate.extend(2u32.to_be_bytes());
        truncate.push(0);
        truncate.extend(5u32.to_be_bytes());
        truncate.extend(6u32.to_be_bytes());
        assert_eq!(
            decode(&truncate).unwrap(),
            Message::Truncate {
                relations: vec![5, 6]
            }
        );
        assert_eq!(decode(b"Yxyz").unwrap(), Message::Other(b'Y'));
    }

    #[test]
    fn malformed_messages_are_errors() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("short begin", begin(1)[..10].to_vec()),
            ("short commit", commit(1, 2)[..12].to_vec()),
            ("relation name without its end", {
                let r = relation(5, "public", "penduduk", &["nik"]);
                r[..12].to_vec()
            }),
            (
                "insert without N",
                change(b'I', 5, &[(b'K', tuple(&[Some("1")]))]),
            ),
            ("value longer than the message", {
                let mut m = change(b'I', 5, &[(b'N', tuple(&[Some("1234")]))]);
                m.truncate(m.len() - 2);
                m
            }),
            ("unknown column kind", {
                let mut m = change(b'I', 5, &[(b'N', tuple(&[None]))]);
                let last = m.len() - 1;
                m[last] = b'x';
                m
            }),
            ("delete without its key", change(b'D', 5, &[])),
        ];
        for (name, bytes) in cases {
            assert!(decode(&bytes).is_err(), "{name}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode(&bytes);
        }
    }
}
