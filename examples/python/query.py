"""A Jembatan consumer in Python over gRPC, with nothing but grpcio.

It runs the clients' common scenario against a broker:

1. a query streamed into a JSON Lines file, one record a line, never held
   whole in memory, its receipt's payload hash recomputed and compared;
2. a lookup of the first record's key with values to verify, printing
   whether each matched (the stored values never leave the broker);
3. a request for a field the agreement does not grant, whose denial reason
   codes are read from the `jembatan-denial-bin` trailer.

It exits non-zero when a payload hash does not match, a verification
answers otherwise than expected, or the denial's reason codes cannot be
read. Generate the stubs from the protos, then run against a broker:

    pip install -r requirements.txt
    python -m grpc_tools.protoc -I ../../proto --python_out=. --grpc_python_out=. ../../proto/jembatan/v1/*.proto
    python query.py --certs DIR/certs --agency dinsos --broker localhost:PORT --out records.jsonl

where DIR is a directory kept by `jembatan demo --keep DIR` and the broker and
the disdukcapil adapter run from its configs (`jembatan broker --config
DIR/broker.toml`, `jembatan adapter --config DIR/adapter-disdukcapil.toml`).
"""

import argparse
import hashlib
import json
import sys

import grpc

from jembatan.v1 import common_pb2, exchange_pb2, exchange_pb2_grpc

DATASET = "disdukcapil.penduduk"
PURPOSE = "pemutakhiran data terpadu kesejahteraan sosial"
DENIAL_TRAILER = "jembatan-denial-bin"


class Failed(Exception):
    """A check of the scenario did not hold."""


def stream_query(stub, args) -> dict:
    """Streams the query's records into args.out; returns the first record."""
    # In the consumer's own schema, fields and filters use its names
    # (full_name, birth_date, district_code); the broker translates.
    own = args.own_schema
    request = exchange_pb2.QueryRequest(
        dataset=DATASET,
        target_schema="dinsos.warga@1" if own else "",
        purpose=PURPOSE,
        fields=["nik", "full_name", "birth_date"] if own else ["nik", "nama_lengkap", "tgl_lahir"],
        filter=common_pb2.Filter(
            predicate=common_pb2.Predicate(
                field="district_code" if own else "kode_kecamatan",
                op=common_pb2.OPERATOR_EQ,
                value=common_pb2.Scalar(string_value=args.district),
            )
        ),
    )
    digest, rows, first, receipt = hashlib.sha256(), 0, None, None
    with open(args.out, "wb") as out:
        for message in stub.Query(request):
            if message.HasField("batch"):
                for text in message.batch.records:
                    # The hash covers each record's exact text and a newline:
                    # write and hash the bytes as received, never re-encoded.
                    line = text.encode() + b"\n"
                    digest.update(line)
                    out.write(line)
                    rows += 1
                    if first is None:
                        first = json.loads(text)  # each record is one JSON object
            else:
                receipt = message.receipt
    if receipt is None:
        raise Failed("the query stream ended without a receipt")
    ok = receipt.payload_sha256 == digest.hexdigest()
    print(f"query: {rows} records written to {args.out}")
    print(f"  receipt: exchange {receipt.exchange_id}, audit entry #{receipt.entry_seq}, rows {receipt.rows}")
    print(f"  payload hash {digest.hexdigest()} matches the receipt: {ok}")
    if not ok or receipt.rows != rows:
        raise Failed(f"the receipt's payload hash {receipt.payload_sha256} ({receipt.rows} rows) does not match")
    if first is None:
        raise Failed(f"the query for district {args.district} returned no record")
    return first


def lookup(stub, args, first: dict) -> None:
    """Looks up the first record's key, verifying one right and one wrong value."""
    name_field = "full_name" if args.own_schema else "nama_lengkap"
    nik, name = first["nik"], first[name_field]
    request = exchange_pb2.LookupRequest(
        dataset=DATASET,
        purpose=PURPOSE,
        fields=["nik", "nama_lengkap"],
        key=common_pb2.Scalar(string_value=nik),
        verify={
            "nama_lengkap": common_pb2.Scalar(string_value=name),
            "tgl_lahir": common_pb2.Scalar(string_value="1900-01-01"),
        },
    )
    answer = stub.Lookup(request)
    print(f"lookup: key {nik} found: {answer.found}")
    for field, matched in sorted(answer.verified.items()):
        print(f"  verify {field}: {'matched' if matched else 'did not match'}")
    payload = (answer.record + "\n").encode() if answer.found else b""
    digest = hashlib.sha256(payload).hexdigest()
    ok = digest == answer.receipt.payload_sha256
    print(f"  receipt: audit entry #{answer.receipt.entry_seq}, payload hash matches: {ok}")
    if not answer.found:
        raise Failed(f"the lookup did not find {nik}")
    if not ok:
        raise Failed(f"the lookup's payload hash {digest} is not the receipt's {answer.receipt.payload_sha256}")
    if answer.verified.get("nama_lengkap") is not True or answer.verified.get("tgl_lahir") is not False:
        raise Failed(f"expected nama_lengkap to match and tgl_lahir not to, got {dict(answer.verified)}")


def denied(stub) -> None:
    """Asks for a field the agreement does not grant and prints the reason codes."""
    request = exchange_pb2.QueryRequest(dataset=DATASET, purpose=PURPOSE, fields=["nik", "agama"], limit=1)
    try:
        for _ in stub.Query(request):
            pass
    except grpc.RpcError as err:
        print(f"denied: {err.code().name}: {err.details()}")
        details = None
        for key, value in err.trailing_metadata() or ():
            if key == DENIAL_TRAILER:
                details = common_pb2.DenialDetails.FromString(value)
        if details is None or not details.reasons:
            raise Failed(f"no reason codes in the {DENIAL_TRAILER} trailer")
        print(f"  audit entry #{details.entry_seq}, exchange {details.exchange_id}")
        for reason in details.reasons:
            code = common_pb2.DenialCode.Name(reason.code)
            print(f"  reason {reason.reason} ({code}), agreement {reason.agreement_id}, fields {list(reason.fields)}")
        return
    raise Failed("the request for a field not granted was not denied")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--certs", required=True, help="directory with ca.pem and agency-<id>.pem")
    ap.add_argument("--agency", default="dinsos")
    ap.add_argument("--broker", required=True, help="host:port of the broker")
    ap.add_argument("--district", default="15.07.01")
    ap.add_argument("--out", default="records.jsonl", help="file the query's records are streamed into")
    ap.add_argument(
        "--own-schema",
        action="store_true",
        help="ask for the records in Dinas Sosial's own schema, dinsos.warga@1 (translated by the broker)",
    )
    args = ap.parse_args()

    def read(name: str) -> bytes:
        with open(f"{args.certs}/{name}", "rb") as f:
            return f.read()

    # Identity is the client certificate: no request field names the agency.
    creds = grpc.ssl_channel_credentials(
        read("ca.pem"), read(f"agency-{args.agency}-key.pem"), read(f"agency-{args.agency}.pem")
    )
    with grpc.secure_channel(args.broker, creds) as channel:
        stub = exchange_pb2_grpc.ExchangeStub(channel)
        try:
            first = stream_query(stub, args)
            lookup(stub, args, first)
            denied(stub)
        except Failed as err:
            print(f"FAILED: {err}", file=sys.stderr)
            return 1
        except grpc.RpcError as err:
            print(f"FAILED: {err.code().name}: {err.details()}", file=sys.stderr)
            return 1
    print("python: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
