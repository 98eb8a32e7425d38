#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/seed-*: small valid
inputs taken from the project's tests and fixtures. Run from anywhere;
only the standard library is needed. The protobuf seeds are encoded by
hand (the messages are small and fixed)."""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    path = os.path.join(HERE, "corpus", target, "seed-" + name)
    with open(path, "wb") as f:
        f.write(data)


# --- protobuf, by hand -------------------------------------------------------

def varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data


def field_varint(num, n):
    return varint(num << 3) + varint(n)


def field_double(num, x):
    return varint(num << 3 | 1) + struct.pack("<d", x)


def scalar(v):
    if isinstance(v, bool):
        return field_varint(4, int(v))
    if isinstance(v, int):
        return field_varint(2, v)
    if isinstance(v, float):
        return field_double(3, v)
    return field_bytes(1, v.encode())


OPS = {"eq": 1, "ne": 2, "lt": 3, "le": 4, "gt": 5, "ge": 6, "in": 7,
       "prefix": 8, "is_null": 9, "is_not_null": 10}


def pb_filter(f):
    """The config form of a filter ({field, op, value | values}, {all},
    {any}, {not}) as proto bytes."""
    if "all" in f or "any" in f:
        key = "all" if "all" in f else "any"
        lst = b"".join(field_bytes(1, pb_filter(x)) for x in f[key])
        return field_bytes(2 if key == "all" else 3, lst)
    if "not" in f:
        return field_bytes(4, pb_filter(f["not"]))
    p = field_bytes(1, f["field"].encode()) + field_varint(2, OPS[f["op"]])
    if "value" in f:
        p += field_bytes(3, scalar(f["value"]))
    for v in f.get("values", []):
        p += field_bytes(4, scalar(v))
    return field_bytes(1, p)


FILTERS = [
    {"field": "nik", "op": "eq", "value": "3204015708850001"},
    {"all": [
        {"field": "kode_kecamatan", "op": "eq", "value": "15.07.01"},
        {"not": {"field": "umur", "op": "lt", "value": 17}},
        {"field": "agama", "op": "in", "values": ["ISLAM", "KRISTEN"]},
    ]},
    {"any": [
        {"field": "umur", "op": "ge", "value": 60},
        {"field": "tinggi", "op": "lt", "value": 150.5},
        {"field": "hidup", "op": "eq", "value": True},
        {"field": "gaji", "op": "le", "value": "12500000.00"},
    ]},
    {"all": [
        {"field": "tgl_lahir", "op": "gt", "value": "1985-08-17"},
        {"field": "dibuat", "op": "lt", "value": "2020-01-31T08:00:00+07:00"},
        {"field": "diubah", "op": "ge", "value": "2020-01-31 08:00:00"},
        {"field": "jam", "op": "eq", "value": "08:30:00"},
    ]},
    {"all": [
        {"field": "nik", "op": "prefix", "value": "3204%_\\"},
        {"field": "id", "op": "eq", "value": "00000000-0000-0000-0000-000000000000"},
        {"field": "foto", "op": "is_not_null"},
        {"field": "data", "op": "is_null"},
        {"any": []},
    ]},
]
for i, f in enumerate(FILTERS):
    # mode byte 0: the rest is protobuf
    write("filter", f"proto-{i}", b"\x00" + pb_filter(f))
# mode byte 1: `arbitrary` shapes the rest over the fixed whitelist
write("filter", "arbitrary-0", b"\x01" + bytes(range(64)))
write("filter", "arbitrary-1", b"\x01" + bytes([3, 2, 1, 0, 9, 8, 7, 6] * 16))

# --- mapping -----------------------------------------------------------------

data = os.path.join(ROOT, "crates/jembatan-mapping/tests/data")
toml_doc = open(os.path.join(data, "penduduk-to-warga.toml")).read()
# selector: bit 0 JSON, bit 1 the permissive schema pair
write("mapping", "example-toml", b"\x00" + toml_doc.encode())
head = 'version = 1\nsource = "a.src@1"\ntarget = "b.dst@1"\nsecrets = ["k"]\n'
OPS_RULES = [
    '[[rule]]\ntarget = "out"\nfrom = "s"\nops = [{ cast = "integer" }]\n',
    '[[rule]]\ntarget = "out"\nfrom = "t"\nops = [{ date = { parse = "%d-%m-%Y", format = "%Y-%m-%d" } }]\n',
    '[[rule]]\ntarget = "a.b.c"\nfrom = "s"\nops = ["trim", "upper", { split = { separator = " ", part = -1 } }]\n',
    '[[rule]]\ntarget = "out"\nfrom = "u"\nops = [{ each = [{ cast = "string" }] }, { filter = { op = "is_not_null" } }]\n',
    '[[rule]]\ntarget = "h"\nfrom = "s"\nops = [{ hash = { secret = "k" } }]\n\n[[rule]]\ntarget = "m"\nfrom = "s"\nops = [{ mask = { keep_last = 2 } }]\n',
    '[[rule]]\ntarget = "alive"\nwhen = { field = "b", op = "eq", value = true }\nthen = { const = false }\nelse = { from = "i" }\n',
]
for i, r in enumerate(OPS_RULES):
    write("mapping", f"ops-{i}", b"\x02" + (head + r).encode())
write("mapping", "ops-json", b"\x03" + json.dumps({
    "version": 1, "source": "a.src@1", "target": "b.dst@1",
    "rule": [{"target": "out", "from": "s", "ops": [{"cast": "integer"}]},
             {"target": "n", "from": "obj.x", "default": "-"}],
}).encode())

# --- schema_compat -----------------------------------------------------------

pend = open(os.path.join(data, "penduduk.schema.json")).read()
warga = open(os.path.join(data, "warga.schema.json")).read()
SCHEMAS = [
    ({"type": "object", "properties": {"sex": {"enum": ["M", "F", "X"]}}},
     {"type": "object", "properties": {"sex": {"enum": ["M", "F"]}}}),
    ({"type": "object", "properties": {"a": {"type": "integer", "maximum": 10}},
      "required": ["a"], "additionalProperties": False},
     {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "string", "default": ""}},
      "required": ["a", "b"]}),
    ({"$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
      "$ref": "#/$defs/node"},
     {"$anchor": "root", "type": "object", "properties": {"next": {"$ref": "#root"}, "v": {"type": "string", "pattern": "^[a-z]+$"}}}),
    ({"type": "array", "prefixItems": [{"type": "string"}], "items": {"type": "integer"}, "maxItems": 4},
     {"anyOf": [{"type": "array"}, {"type": "null"}]}),
    ({"oneOf": [{"type": "string", "format": "date"}, {"const": 1}]},
     {"not": {"type": "boolean"}, "if": {"type": "string"}, "then": {"minLength": 1}}),
]
write("schema_compat", "example", pend.encode() + b"\x00" + warga.encode())
write("schema_compat", "same", pend)
for i, (a, b) in enumerate(SCHEMAS):
    write("schema_compat", f"pair-{i}", json.dumps(a).encode() + b"\x00" + json.dumps(b).encode())

# --- checkpoint (from crates/jembatan-tlog/tests/note.rs) --------------------

EM = "\u2014"
write("checkpoint", "doc-note",
      "jembatan.example/audit\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n\n"
      f"{EM} jembatan.example/audit urFph22v3a9yeVFLkytlUcbj5MaZi13Am1LbTTPl5e/RYEJu4JW8x8un9hFudCjI7fFzF40LzWmVu9F4HpxB3CtyqQo=\n")
write("checkpoint", "spec-note",
      "This is an example message.\n\n"
      f"{EM} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n")
write("checkpoint", "body",
      "jembatan.example/audit\n8\nXcnaeacGWamtVZy3Ad7ZoqudgjqtL0lgz+Nw7/RgQyg=\n")
write("checkpoint", "body-ext",
      "fuzz.example/log\n18446744073709551615\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\nextension one\n\u00e9xtension two\n")
write("checkpoint", "two-sigs",
      "a\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n"
      f"{EM} fuzz.example/log AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
      f"{EM} other+name AAAAAAA=\n")

# --- receipt -----------------------------------------------------------------

ts = field_varint(1, 1_600_000_000) + field_varint(2, 500)
receipt = (field_bytes(1, b"0190f0a0-0000-7000-8000-000000000001") + field_varint(2, 7)
           + field_varint(3, 6) + field_bytes(4, b"ab" * 32) + field_varint(5, 2)
           + field_varint(6, 30) + field_bytes(7, ts) + field_bytes(8, b"cd" * 32)
           + field_bytes(9, b"ef" * 32))
write("receipt", "proto", b"\x00" + receipt)
write("receipt", "proto-extreme-time", b"\x00" + field_bytes(7, field_varint(1, -62135596801) + field_varint(2, 999_999_999)))
served = {"kind": "served", "time": "2026-01-01T00:00:00.000000Z", "exchange_id": "e1",
          "dataset": "disdukcapil.penduduk", "consumer": "dinsos", "purpose": "bansos",
          "columns": ["nik"], "rows": 2, "bytes": 30, "payload_sha256": "00", "status": "cancelled"}
acked = {"kind": "receipt", "time": "2026-01-01T00:00:00.000000Z", "dataset": "a.b",
         "consumer": "dinsos", "receipt": {"exchange_id": "e1", "entry_seq": 7, "decision_seq": 6,
                                           "payload_sha256": "", "rows": 0, "bytes": 0,
                                           "completed_at": "2020-09-13T12:26:40Z",
                                           "entry_sha256": "", "leaf_hash": ""}}
write("receipt", "log", b"\x01" + (json.dumps(served) + "\n\n" + json.dumps(acked) + "\n").encode())

# --- audit_entry -------------------------------------------------------------

def compact(d):
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False)


decision = {
    "v": 1, "kind": "decision", "exchange_id": "0190f0a0-0000-7000-8000-000000000001",
    "time": "2026-01-01T00:00:00.000000Z", "operation": "query", "caller": "agency:dinsos",
    "consumer": "dinsos", "provider": "disdukcapil", "dataset": "disdukcapil.penduduk",
    "purpose": "bansos", "fields": ["nik", "nama"],
    "filter": {"field": "umur", "op": "ge", "value": 60}, "subject_hash": None, "limit": 10,
    "agreement_id": "agr-1", "agreement_terms_sha256": "ab" * 32, "decision": "allow",
    "reasons": [], "status": "started", "rows": 0, "bytes": 0, "payload_sha256": None,
    "duration_ms": None, "error": None, "trace_id": None,
}
write("audit_entry", "decision", compact(decision))
denied = dict(decision, decision="deny", status="denied", filter=None,
              reasons=[{"code": "field_not_granted", "message": "field nama is not granted",
                        "agreement_id": "agr-1", "fields": ["nama"]}])
write("audit_entry", "denied", compact(denied))
completion = dict(decision, kind="completion", status="ok", rows=2, bytes=30,
                  payload_sha256="cd" * 32, duration_ms=12)
# optional fields sit at their places in field order
items = list(completion.items())
out = {}
for k, v in items:
    if k == "decision":
        out["translation"] = {"source_schema": "disdukcapil.penduduk@1", "source_schema_id": "sha256:" + "0" * 64,
                              "target_schema": "dinsos.warga@1", "target_schema_id": "sha256:" + "1" * 64,
                              "mapping_version": 1}
    out[k] = v
    if k == "payload_sha256":
        out["received"] = {"rows": 2, "bytes": 40, "payload_sha256": "ef" * 32}
write("audit_entry", "completion-translated", compact(out))
agreement = dict(decision, kind="agreement", operation="agreement", filter=None, limit=None,
                 fields=[], decision="allow", status="ok")
agreement["change"] = {"action": "revoke", "from": "approved", "to": "revoked", "reason": "ended"}
write("audit_entry", "agreement", compact(agreement))


# --- pgoutput: a consumed-mark byte, then u16-length-prefixed messages --------

def cstr(s):
    return s.encode() + b"\0"


def relation(rid, table, columns):
    out = b"R" + struct.pack(">I", rid) + cstr("public") + cstr(table) + b"d"
    out += struct.pack(">H", len(columns))
    for c in columns:
        out += b"\x01" + cstr(c) + struct.pack(">II", 25, 0xFFFFFFFF)
    return out


def tuple_(values):
    out = struct.pack(">H", len(values))
    for v in values:
        if v is None:
            out += b"n"
        else:
            out += b"t" + struct.pack(">I", len(v)) + v.encode()
    return out


def begin(xid):
    return b"B" + struct.pack(">QQI", 0, 0, xid)


def commit(lsn):
    return b"C" + b"\0" + struct.pack(">QQQ", lsn, lsn + 8, 700_000_000_000_000)


def framed(mark, messages):
    return bytes([mark]) + b"".join(struct.pack(">H", len(m)) + m for m in messages)


penduduk = relation(16384, "penduduk", ["nik", "nama"])
kk = relation(16390, "kk", ["no", "kepala"])
write("pgoutput", "insert-update-delete", framed(0, [
    begin(700), penduduk,
    b"I" + struct.pack(">I", 16384) + b"N" + tuple_(["1507010101900001", "SITI"]),
    b"U" + struct.pack(">I", 16384) + b"K" + tuple_(["1507010101900001", None])
    + b"N" + tuple_(["1507010101900002", "SITI"]),
    commit(4096),
    begin(701),
    b"D" + struct.pack(">I", 16384) + b"K" + tuple_(["1507010101900002", None]),
    commit(8192),
]))
write("pgoutput", "integer-key-truncate", framed(1, [
    begin(800), kk,
    b"I" + struct.pack(">I", 16390) + b"N" + tuple_(["42", "BUDI"]),
    b"T" + struct.pack(">I", 1) + b"\0" + struct.pack(">I", 16390),
    commit(12288),
]))
