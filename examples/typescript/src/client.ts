// A Jembatan consumer in TypeScript over gRPC (@grpc/grpc-js), with the
// agency's PEM certificate and key.
//
// It runs the clients' common scenario:
//   1. a query whose server stream is written into a JSON Lines file as the
//      batches arrive, one record a line, never held whole in memory; the
//      receipt's payload hash recomputed and compared, with the receipt read
//      both from the stream and from the `jembatan-receipt-bin` trailer;
//   2. a lookup of the first record's key with values to verify, printing
//      whether each matched (the stored values never leave the broker);
//   3. a request for a field the agreement does not grant, whose reason
//      codes are decoded from the `jembatan-denial-bin` trailer.
// It exits non-zero when a payload hash does not match, a verification
// answers otherwise than expected, or the denial's reason codes cannot be
// read.
//
//   npm ci && npx tsc
//   node dist/client.js --certs DIR/certs --broker localhost:PORT [--agency dinsos] [--out records.jsonl]

import { createHash } from "node:crypto";
import { once } from "node:events";
import { createWriteStream, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import protobuf from "protobufjs";

const DATASET = "disdukcapil.penduduk";
const PURPOSE = "pemutakhiran data terpadu kesejahteraan sosial";
const RECEIPT_TRAILER = "jembatan-receipt-bin";
const DENIAL_TRAILER = "jembatan-denial-bin";

/** A check of the scenario did not hold. */
class Failed extends Error {}

interface Receipt {
  exchangeId: string;
  entrySeq: string;
  payloadSha256: string;
  rows: string;
}

interface DenialDetails {
  exchangeId: string;
  entrySeq: string;
  reasons: { code: string; reason: string; agreementId: string; fields: string[] }[];
}

interface QueryResponse {
  batch?: { records: string[] };
  receipt?: Receipt;
}

interface LookupResponse {
  found: boolean;
  record: string;
  receipt: Receipt;
  verified: Record<string, boolean>;
}

type Scalar = { stringValue: string };

interface ExchangeClient extends grpc.Client {
  Query(request: object, metadata?: grpc.Metadata): grpc.ClientReadableStream<QueryResponse>;
  Lookup(
    request: object,
    callback: (err: grpc.ServiceError | null, answer?: LookupResponse) => void,
  ): grpc.ClientUnaryCall;
}

const here = path.dirname(fileURLToPath(import.meta.url));
const protoDir = path.resolve(here, "../../../proto");
const protoFiles = ["jembatan/v1/exchange.proto"];

// Field names in lowerCamelCase, 64-bit integers and enums as strings,
// every field present: as the HTTP/JSON door answers.
const conversion = { longs: String, enums: String, defaults: true, oneofs: true };

/** The protos' message types, for the binary trailers. */
function loadTypes(): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) =>
    target.startsWith("google/protobuf/") ? target : path.join(protoDir, target);
  return root.loadSync(protoFiles, { keepCase: false });
}

function decodeTrailer<T>(root: protobuf.Root, type: string, metadata: grpc.Metadata | undefined, key: string): T | null {
  const value = metadata?.get(key)[0];
  if (!(value instanceof Buffer)) return null;
  const message = root.lookupType(type);
  return message.toObject(message.decode(value), conversion) as T;
}

function sha256(data: string | Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Streams the query's records into out; returns the first record. */
async function streamQuery(
  client: ExchangeClient,
  types: protobuf.Root,
  district: string,
  out: string,
): Promise<Record<string, unknown>> {
  const call = client.Query({
    dataset: DATASET,
    purpose: PURPOSE,
    fields: ["nik", "nama_lengkap", "tgl_lahir"],
    filter: {
      predicate: { field: "kode_kecamatan", op: "OPERATOR_EQ", value: { stringValue: district } },
    },
  });
  const status = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
  const file = createWriteStream(out);
  const digest = createHash("sha256");
  let rows = 0;
  let first: Record<string, unknown> | null = null;
  let receipt: Receipt | null = null;
  for await (const message of call as AsyncIterable<QueryResponse>) {
    for (const text of message.batch?.records ?? []) {
      // The hash covers each record's exact text and a newline.
      const line = text + "\n";
      digest.update(line);
      rows++;
      first ??= JSON.parse(text) as Record<string, unknown>; // each record is one JSON object
      // Wait when the file falls behind: the stream is read no faster than
      // it is written, so the answer is never gathered whole.
      if (!file.write(line)) await once(file, "drain");
    }
    if (message.receipt) receipt = message.receipt;
  }
  file.end();
  await once(file, "finish");
  const trailer = decodeTrailer<Receipt>(types, "jembatan.v1.Receipt", (await status).metadata, RECEIPT_TRAILER);
  if (!receipt || !trailer) throw new Failed("the query stream ended without a receipt");
  if (trailer.exchangeId !== receipt.exchangeId || trailer.payloadSha256 !== receipt.payloadSha256) {
    throw new Failed("the receipt trailer is not the receipt in the stream");
  }
  const hex = digest.digest("hex");
  const match = hex === receipt.payloadSha256;
  console.log(`query: ${rows} records written to ${out}`);
  console.log(`  receipt: exchange ${receipt.exchangeId}, audit entry #${receipt.entrySeq}, rows ${receipt.rows}`);
  console.log(`  (the same receipt in the ${RECEIPT_TRAILER} trailer)`);
  console.log(`  payload hash ${hex} matches the receipt: ${match}`);
  if (!match || receipt.rows !== String(rows)) {
    throw new Failed(`the receipt's payload hash ${receipt.payloadSha256} (${receipt.rows} rows) does not match`);
  }
  if (!first) throw new Failed(`the query for district ${district} returned no record`);
  return first;
}

/** Looks up the first record's key, verifying one right and one wrong value. */
async function lookup(client: ExchangeClient, first: Record<string, unknown>): Promise<void> {
  const nik = String(first.nik);
  const verify: Record<string, Scalar> = {
    nama_lengkap: { stringValue: String(first.nama_lengkap) },
    tgl_lahir: { stringValue: "1900-01-01" },
  };
  const answer = await new Promise<LookupResponse>((resolve, reject) =>
    client.Lookup(
      { dataset: DATASET, purpose: PURPOSE, fields: ["nik", "nama_lengkap"], key: { stringValue: nik }, verify },
      (err, response) => (err || !response ? reject(err) : resolve(response)),
    ),
  );
  console.log(`lookup: key ${nik} found: ${answer.found}`);
  for (const field of Object.keys(answer.verified).sort()) {
    console.log(`  verify ${field}: ${answer.verified[field] ? "matched" : "did not match"}`);
  }
  const hex = sha256(answer.found ? answer.record + "\n" : "");
  const match = hex === answer.receipt.payloadSha256;
  console.log(`  receipt: audit entry #${answer.receipt.entrySeq}, payload hash matches: ${match}`);
  if (!answer.found) throw new Failed(`the lookup did not find ${nik}`);
  if (!match) throw new Failed(`the lookup's payload hash ${hex} is not the receipt's ${answer.receipt.payloadSha256}`);
  if (answer.verified.nama_lengkap !== true || answer.verified.tgl_lahir !== false) {
    throw new Failed(`expected nama_lengkap to match and tgl_lahir not to, got ${JSON.stringify(answer.verified)}`);
  }
}

/** Asks for a field the agreement does not grant and prints the reason codes. */
async function denied(client: ExchangeClient, types: protobuf.Root): Promise<void> {
  const call = client.Query({ dataset: DATASET, purpose: PURPOSE, fields: ["nik", "agama"], limit: 1 });
  try {
    for await (const _ of call as AsyncIterable<QueryResponse>) {
      // a denial comes before any record
    }
  } catch (e) {
    const err = e as grpc.ServiceError;
    console.log(`denied: ${grpc.status[err.code]}: ${err.details}`);
    const details = decodeTrailer<DenialDetails>(types, "jembatan.v1.DenialDetails", err.metadata, DENIAL_TRAILER);
    if (err.code !== grpc.status.PERMISSION_DENIED || !details || details.reasons.length === 0) {
      throw new Failed(`no reason codes in the ${DENIAL_TRAILER} trailer`);
    }
    console.log(`  audit entry #${details.entrySeq}, exchange ${details.exchangeId}`);
    for (const r of details.reasons) {
      console.log(`  reason ${r.reason} (${r.code}), agreement ${r.agreementId}, fields ${JSON.stringify(r.fields)}`);
    }
    return;
  }
  throw new Failed("the request for a field not granted was not denied");
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      certs: { type: "string" },
      broker: { type: "string" },
      agency: { type: "string", default: "dinsos" },
      district: { type: "string", default: "15.07.01" },
      out: { type: "string", default: "records.jsonl" },
    },
  });
  if (!values.certs || !values.broker) {
    console.error("usage: node dist/client.js --certs DIR --broker HOST:PORT [--agency ID] [--district CODE] [--out FILE]");
    return 2;
  }
  const certs = values.certs;
  const agency = values.agency!;
  // Identity is the client certificate: no request field names the agency.
  const credentials = grpc.credentials.createSsl(
    readFileSync(path.join(certs, "ca.pem")),
    readFileSync(path.join(certs, `agency-${agency}-key.pem`)),
    readFileSync(path.join(certs, `agency-${agency}.pem`)),
  );
  const definition = protoLoader.loadSync(protoFiles, { includeDirs: [protoDir], ...conversion });
  const loaded = grpc.loadPackageDefinition(definition) as unknown as {
    jembatan: { v1: { Exchange: new (address: string, credentials: grpc.ChannelCredentials) => ExchangeClient } };
  };
  const client = new loaded.jembatan.v1.Exchange(values.broker, credentials);
  const types = loadTypes();
  try {
    const first = await streamQuery(client, types, values.district!, values.out!);
    await lookup(client, first);
    await denied(client, types);
  } catch (e) {
    const err = e as Partial<grpc.ServiceError> & Error;
    console.error(`FAILED: ${err.code !== undefined ? `${grpc.status[err.code]}: ${err.details}` : err.message}`);
    return 1;
  } finally {
    client.close();
  }
  console.log("typescript: all checks passed");
  return 0;
}

process.exitCode = await main();
