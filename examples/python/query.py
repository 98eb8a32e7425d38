"""Query the Jembatan broker from Python, with nothing but grpcio.

Generate the stubs from the protos, then run against a broker:

    pip install grpcio grpcio-tools
    python -m grpc_tools.protoc -I ../../proto --python_out=. --grpc_python_out=. ../../proto/jembatan/v1/*.proto
    python query.py --certs DIR/certs --agency dinsos --broker localhost:PORT

where DIR is a directory kept by `jembatan demo --keep DIR` and the broker and
the disdukcapil adapter run from its configs (`jembatan broker --config
DIR/broker.toml`, `jembatan adapter --config DIR/adapter-disdukcapil.toml`).
"""

import argparse
import hashlib
import json

import grpc

from jembatan.v1 import common_pb2, exchange_pb2, exchange_pb2_grpc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--certs", required=True, help="directory with ca.pem and agency-<id>.pem")
    ap.add_argument("--agency", default="dinsos")
    ap.add_argument("--broker", required=True, help="host:port of the broker")
    ap.add_argument("--district", default="15.07.01")
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
    stub = exchange_pb2_grpc.ExchangeStub(grpc.secure_channel(args.broker, creds))

    # In the consumer's own schema, fields and filters use its names
    # (full_name, birth_date, district_code); the broker translates.
    own = args.own_schema
    request = exchange_pb2.QueryRequest(
        dataset="disdukcapil.penduduk",
        target_schema="dinsos.warga@1" if own else "",
        purpose="pemutakhiran data terpadu kesejahteraan sosial",
        fields=["nik", "full_name", "birth_date"] if own else ["nik", "nama_lengkap", "tgl_lahir"],
        filter=common_pb2.Filter(
            predicate=common_pb2.Predicate(
                field="district_code" if own else "kode_kecamatan",
                op=common_pb2.OPERATOR_EQ,
                value=common_pb2.Scalar(string_value=args.district),
            )
        ),
    )
    digest, rows = hashlib.sha256(), 0
    try:
        call = stub.Query(request)
        for message in call:
            if message.HasField("batch"):
                for text in message.batch.records:
                    record = json.loads(text)  # each record is one JSON object
                    digest.update(text.encode())
                    digest.update(b"\n")
                    rows += 1
                    if rows <= 3:
                        print(record)
            else:
                receipt = message.receipt
                ok = receipt.payload_sha256 == digest.hexdigest()
                print(f"{rows} records; receipt: audit entry #{receipt.entry_seq}, payload hash matches: {ok}")
    except grpc.RpcError as err:
        print(f"refused: {err.code().name}: {err.details()}")
        for key, value in err.trailing_metadata() or ():
            if key == "jembatan-denial-bin":
                details = common_pb2.DenialDetails.FromString(value)
                print("reason codes:", [r.reason for r in details.reasons])


if __name__ == "__main__":
    main()
