// A Jembatan consumer in Java over the broker's HTTP/JSON door, with the
// standard library alone (java.net.http.HttpClient) and the agency's
// certificate and key in a PKCS#12 file.
//
// It runs the clients' common scenario:
//   1. a query whose NDJSON answer is streamed into a JSON Lines file, one
//      record a line, never held whole in memory; the receipt's payload hash
//      recomputed over the record lines and compared;
//   2. a lookup of the first record's key with values to verify, printing
//      whether each matched (the stored values never leave the broker);
//   3. a request for a field the agreement does not grant, whose denial
//      reason codes are printed.
// It exits non-zero when a payload hash does not match, a verification
// answers otherwise than expected, or the denial's reason codes cannot be
// read.
//
//   javac -d out Client.java
//   jembatan pki p12 --cert DIR/certs/agency-dinsos.pem --key DIR/certs/agency-dinsos-key.pem \
//       --out agency-dinsos.p12 --password-file PASSWORD-FILE
//   java -cp out Client --p12 agency-dinsos.p12 --password-file PASSWORD-FILE --ca DIR/certs/ca.pem \
//       --broker https://localhost:PORT [--out records.jsonl]

import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.MessageDigest;
import java.security.cert.CertificateFactory;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public final class Client {
    static final String DATASET = "disdukcapil.penduduk";
    static final String PURPOSE = "pemutakhiran data terpadu kesejahteraan sosial";

    /** A check of the scenario did not hold. */
    static final class Failed extends Exception {
        Failed(String message) {
            super(message);
        }
    }

    private final HttpClient http;
    private final String broker;

    Client(HttpClient http, String broker) {
        this.http = http;
        this.broker = broker;
    }

    public static void main(String[] argv) throws Exception {
        Map<String, String> args = new HashMap<>(Map.of("out", "records.jsonl", "district", "15.07.01"));
        for (int i = 0; i + 1 < argv.length; i += 2) {
            if (!argv[i].startsWith("--")) {
                break;
            }
            args.put(argv[i].substring(2), argv[i + 1]);
        }
        for (String required : List.of("p12", "password-file", "ca", "broker")) {
            if (!args.containsKey(required)) {
                System.err.println("usage: java Client --p12 FILE --password-file FILE --ca CA.pem --broker https://HOST:PORT"
                        + " [--district CODE] [--out FILE]");
                System.exit(2);
            }
        }
        // The password is the first line of its file, kept off the command line.
        String password = Files.readAllLines(Path.of(args.get("password-file")), StandardCharsets.UTF_8).get(0);
        Client client = new Client(httpClient(args.get("p12"), password, args.get("ca")),
                args.get("broker").replaceAll("/+$", ""));
        try {
            Map<String, Object> first = client.streamQuery(args.get("district"), Path.of(args.get("out")));
            client.lookup(first);
            client.denied();
        } catch (Failed e) {
            System.err.println("FAILED: " + e.getMessage());
            System.exit(1);
        }
        System.out.println("java: all checks passed");
    }

    /** An HTTP client presenting the PKCS#12 certificate and trusting only the federation's CA. */
    static HttpClient httpClient(String p12, String password, String caPem) throws Exception {
        // Identity is the client certificate: no request field names the agency.
        KeyStore keys = KeyStore.getInstance("PKCS12");
        try (InputStream in = new FileInputStream(p12)) {
            keys.load(in, password.toCharArray());
        }
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(keys, password.toCharArray());

        KeyStore trust = KeyStore.getInstance(KeyStore.getDefaultType());
        trust.load(null, null);
        try (InputStream in = new FileInputStream(caPem)) {
            trust.setCertificateEntry("jembatan-ca", CertificateFactory.getInstance("X.509").generateCertificate(in));
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);

        SSLContext tls = SSLContext.getInstance("TLS");
        tls.init(kmf.getKeyManagers(), tmf.getTrustManagers(), null);
        return HttpClient.newBuilder().sslContext(tls).build();
    }

    HttpRequest post(String path, Map<String, Object> body) {
        return HttpRequest.newBuilder(URI.create(broker + path))
                .header("content-type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(Json.write(body)))
                .build();
    }

    /** Streams the query's records into out; returns the first record. */
    Map<String, Object> streamQuery(String district, Path out) throws Exception {
        Map<String, Object> predicate = new LinkedHashMap<>();
        predicate.put("field", "kode_kecamatan");
        predicate.put("op", "OPERATOR_EQ");
        predicate.put("value", district);
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("dataset", DATASET);
        body.put("purpose", PURPOSE);
        body.put("fields", List.of("nik", "nama_lengkap", "tgl_lahir"));
        body.put("filter", Map.of("predicate", predicate));

        HttpResponse<InputStream> response = http.send(post("/exchange/v1/query", body),
                HttpResponse.BodyHandlers.ofInputStream());
        if (response.statusCode() != 200) {
            try (InputStream in = response.body()) {
                throw new Failed("query answered " + response.statusCode() + ": "
                        + new String(in.readAllBytes(), StandardCharsets.UTF_8));
            }
        }
        MessageDigest sha = MessageDigest.getInstance("SHA-256");
        long rows = 0;
        Map<String, Object> first = null;
        // The stream's last line is the receipt (or an error), so one line is
        // held back: when the next one arrives, the held line is a record,
        // hashed and written exactly as received (never re-encoded).
        byte[] held = null;
        try (InputStream in = new BufferedInputStream(response.body());
                OutputStream file = new BufferedOutputStream(Files.newOutputStream(out))) {
            byte[] line;
            while ((line = readLine(in)) != null) {
                if (held != null) {
                    sha.update(held);
                    file.write(held);
                    rows++;
                    if (first == null) {
                        first = Json.object(Json.parse(new String(held, StandardCharsets.UTF_8)));
                    }
                }
                held = line;
            }
        }
        if (held == null || held[held.length - 1] != '\n') {
            throw new Failed("the query stream ended without a receipt");
        }
        Map<String, Object> last = Json.object(Json.parse(new String(held, StandardCharsets.UTF_8)));
        if (last.containsKey("error")) {
            throw new Failed("the query stream ended in error: " + Json.write(last.get("error")));
        }
        Map<String, Object> receipt = Json.object(last.get("receipt"));
        String digest = HexFormat.of().formatHex(sha.digest());
        boolean match = digest.equals(receipt.get("payloadSha256"));
        System.out.println("query: " + rows + " records written to " + out);
        System.out.println("  receipt: exchange " + receipt.get("exchangeId") + ", audit entry #"
                + receipt.get("entrySeq") + ", rows " + receipt.get("rows"));
        System.out.println("  payload hash " + digest + " matches the receipt: " + match);
        if (!match || !String.valueOf(rows).equals(receipt.get("rows"))) {
            throw new Failed("the receipt's payload hash " + receipt.get("payloadSha256") + " (" + receipt.get("rows")
                    + " rows) does not match");
        }
        if (first == null) {
            throw new Failed("the query for district " + district + " returned no record");
        }
        return first;
    }

    /** One line with its newline, or what is left before the end; null at the end. */
    static byte[] readLine(InputStream in) throws IOException {
        ByteArrayOutputStream line = new ByteArrayOutputStream();
        int b;
        while ((b = in.read()) != -1) {
            line.write(b);
            if (b == '\n') {
                break;
            }
        }
        return line.size() == 0 ? null : line.toByteArray();
    }

    /** Looks up the first record's key, verifying one right and one wrong value. */
    void lookup(Map<String, Object> first) throws Exception {
        Object nik = first.get("nik");
        Map<String, Object> verify = new LinkedHashMap<>();
        verify.put("nama_lengkap", first.get("nama_lengkap"));
        verify.put("tgl_lahir", "1900-01-01");
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("dataset", DATASET);
        body.put("purpose", PURPOSE);
        body.put("fields", List.of("nik", "nama_lengkap"));
        body.put("key", nik); // a NIK is text: give it as a string
        body.put("verify", verify);

        HttpResponse<String> response = http.send(post("/exchange/v1/lookup", body),
                HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
        if (response.statusCode() != 200) {
            throw new Failed("lookup answered " + response.statusCode() + ": " + response.body());
        }
        Map<String, Object> answer = Json.object(Json.parse(response.body()));
        boolean found = Boolean.TRUE.equals(answer.get("found"));
        System.out.println("lookup: key " + nik + " found: " + found);
        Map<String, Object> verified = new TreeMap<>(Json.object(answer.get("verified")));
        verified.forEach((field, matched) -> System.out.println(
                "  verify " + field + ": " + (Boolean.TRUE.equals(matched) ? "matched" : "did not match")));
        // `record` is the record's exact JSON text, as the receipt's hash covers it.
        byte[] payload = found ? (answer.get("record") + "\n").getBytes(StandardCharsets.UTF_8) : new byte[0];
        String digest = HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(payload));
        Map<String, Object> receipt = Json.object(answer.get("receipt"));
        boolean match = digest.equals(receipt.get("payloadSha256"));
        System.out.println("  receipt: audit entry #" + receipt.get("entrySeq") + ", payload hash matches: " + match);
        if (!found) {
            throw new Failed("the lookup did not find " + nik);
        }
        if (!match) {
            throw new Failed("the lookup's payload hash " + digest + " is not the receipt's "
                    + receipt.get("payloadSha256"));
        }
        if (!Boolean.TRUE.equals(verified.get("nama_lengkap")) || !Boolean.FALSE.equals(verified.get("tgl_lahir"))) {
            throw new Failed("expected nama_lengkap to match and tgl_lahir not to, got " + Json.write(verified));
        }
    }

    /** Asks for a field the agreement does not grant and prints the reason codes. */
    void denied() throws Exception {
        Map<String, Object> body = new LinkedHashMap<>();
        body.put("dataset", DATASET);
        body.put("purpose", PURPOSE);
        body.put("fields", List.of("nik", "agama"));
        body.put("limit", 1);
        HttpResponse<String> response = http.send(post("/exchange/v1/query", body),
                HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
        if (response.statusCode() == 200) {
            throw new Failed("the request for a field not granted was not denied");
        }
        Map<String, Object> error = Json.object(Json.object(Json.parse(response.body())).get("error"));
        System.out.println("denied: HTTP " + response.statusCode() + " " + error.get("code") + ": "
                + error.get("message"));
        List<Object> reasons = error.get("reasons") instanceof List<?> l ? new ArrayList<>(l) : List.of();
        if (response.statusCode() != 403 || reasons.isEmpty()) {
            throw new Failed("no reason codes in the denial: " + response.body());
        }
        System.out.println("  audit entry #" + Json.write(error.get("auditIndex")) + ", exchange "
                + error.get("exchangeId"));
        for (Object r : reasons) {
            Map<String, Object> reason = Json.object(r);
            System.out.println("  reason " + reason.get("reason") + " (" + reason.get("code") + "), agreement "
                    + reason.get("agreementId") + ", fields " + Json.write(reason.get("fields")));
        }
    }

    /**
     * The little JSON the scenario needs, as the standard library has none:
     * objects, arrays, strings, numbers (kept as their text), booleans and null.
     */
    static final class Json {
        private final String text;
        private int at;

        private Json(String text) {
            this.text = text;
        }

        static Object parse(String text) throws Failed {
            Json p = new Json(text);
            Object value = p.value();
            p.space();
            if (p.at != text.length()) {
                throw p.error("text after the value");
            }
            return value;
        }

        @SuppressWarnings("unchecked")
        static Map<String, Object> object(Object value) throws Failed {
            if (value instanceof Map<?, ?> map) {
                return (Map<String, Object>) map;
            }
            throw new Failed("expected a JSON object, got " + write(value));
        }

        private Failed error(String what) {
            return new Failed("bad JSON at " + at + ": " + what);
        }

        private void space() {
            while (at < text.length() && " \t\r\n".indexOf(text.charAt(at)) >= 0) {
                at++;
            }
        }

        private Object value() throws Failed {
            space();
            if (at >= text.length()) {
                throw error("unexpected end");
            }
            char c = text.charAt(at);
            switch (c) {
                case '{':
                    return objectValue();
                case '[':
                    return arrayValue();
                case '"':
                    return string();
                default:
                    for (String word : new String[] {"true", "false", "null"}) {
                        if (text.startsWith(word, at)) {
                            at += word.length();
                            return word.equals("null") ? null : Boolean.valueOf(word);
                        }
                    }
                    int start = at;
                    while (at < text.length() && "+-0123456789.eE".indexOf(text.charAt(at)) >= 0) {
                        at++;
                    }
                    if (start == at) {
                        throw error("unexpected '" + c + "'");
                    }
                    return new java.math.BigDecimal(text.substring(start, at));
            }
        }

        private Map<String, Object> objectValue() throws Failed {
            Map<String, Object> map = new LinkedHashMap<>();
            at++;
            space();
            if (at < text.length() && text.charAt(at) == '}') {
                at++;
                return map;
            }
            while (true) {
                space();
                if (at >= text.length() || text.charAt(at) != '"') {
                    throw error("expected a key");
                }
                String key = string();
                space();
                expect(':');
                map.put(key, value());
                space();
                if (at < text.length() && text.charAt(at) == ',') {
                    at++;
                    continue;
                }
                expect('}');
                return map;
            }
        }

        private List<Object> arrayValue() throws Failed {
            List<Object> list = new ArrayList<>();
            at++;
            space();
            if (at < text.length() && text.charAt(at) == ']') {
                at++;
                return list;
            }
            while (true) {
                list.add(value());
                space();
                if (at < text.length() && text.charAt(at) == ',') {
                    at++;
                    continue;
                }
                expect(']');
                return list;
            }
        }

        private void expect(char c) throws Failed {
            if (at >= text.length() || text.charAt(at) != c) {
                throw error("expected '" + c + "'");
            }
            at++;
        }

        private String string() throws Failed {
            StringBuilder s = new StringBuilder();
            at++;
            while (true) {
                if (at >= text.length()) {
                    throw error("unterminated string");
                }
                char c = text.charAt(at++);
                if (c == '"') {
                    return s.toString();
                }
                if (c != '\\') {
                    s.append(c);
                    continue;
                }
                if (at >= text.length()) {
                    throw error("unterminated escape");
                }
                char e = text.charAt(at++);
                switch (e) {
                    case 'n' -> s.append('\n');
                    case 't' -> s.append('\t');
                    case 'r' -> s.append('\r');
                    case 'b' -> s.append('\b');
                    case 'f' -> s.append('\f');
                    case 'u' -> {
                        if (at + 4 > text.length()) {
                            throw error("short \\u escape");
                        }
                        s.append((char) Integer.parseInt(text.substring(at, at + 4), 16));
                        at += 4;
                    }
                    default -> s.append(e); // '"', '\\' and '/'
                }
            }
        }

        static String write(Object value) {
            StringBuilder s = new StringBuilder();
            write(s, value);
            return s.toString();
        }

        private static void write(StringBuilder s, Object value) {
            if (value == null) {
                s.append("null");
            } else if (value instanceof String str) {
                s.append('"');
                for (char c : str.toCharArray()) {
                    switch (c) {
                        case '"' -> s.append("\\\"");
                        case '\\' -> s.append("\\\\");
                        case '\n' -> s.append("\\n");
                        case '\r' -> s.append("\\r");
                        case '\t' -> s.append("\\t");
                        default -> {
                            if (c < 0x20) {
                                s.append(String.format("\\u%04x", (int) c));
                            } else {
                                s.append(c);
                            }
                        }
                    }
                }
                s.append('"');
            } else if (value instanceof Map<?, ?> map) {
                s.append('{');
                boolean more = false;
                for (Map.Entry<?, ?> e : map.entrySet()) {
                    if (more) {
                        s.append(',');
                    }
                    write(s, String.valueOf(e.getKey()));
                    s.append(':');
                    write(s, e.getValue());
                    more = true;
                }
                s.append('}');
            } else if (value instanceof List<?> list) {
                s.append('[');
                for (int i = 0; i < list.size(); i++) {
                    if (i > 0) {
                        s.append(',');
                    }
                    write(s, list.get(i));
                }
                s.append(']');
            } else {
                s.append(value); // numbers and booleans
            }
        }
    }
}
