<?php
// A Jembatan consumer in PHP over the broker's HTTP/JSON door, with
// nothing but php-curl and the agency's PEM certificate and key.
//
// It runs the clients' common scenario:
//   1. a query streamed into a JSON Lines file through CURLOPT_WRITEFUNCTION,
//      one record a line, never held whole in memory; the receipt's payload
//      hash recomputed over the record lines and compared;
//   2. a lookup of the first record's key with values to verify, printing
//      whether each matched (the stored values never leave the broker);
//   3. a request for a field the agreement does not grant, whose denial
//      reason codes are printed.
// It exits non-zero when a payload hash does not match, a verification
// answers otherwise than expected, or the denial's reason codes cannot be
// read.
//
//   php client.php --certs DIR/certs --broker https://localhost:PORT [--agency dinsos] [--out records.jsonl]

declare(strict_types=1);

const DATASET = 'disdukcapil.penduduk';
const PURPOSE = 'pemutakhiran data terpadu kesejahteraan sosial';

final class Failed extends Exception
{
}

/** A curl handle for a POST of $body to $path, with the agency's certificate. */
function request(array $opt, string $path, array $body)
{
    $ch = curl_init($opt['broker'] . $path);
    $certs = $opt['certs'];
    $agency = $opt['agency'];
    // Identity is the client certificate: no request field names the agency.
    curl_setopt_array($ch, [
        CURLOPT_SSLCERT => "$certs/agency-$agency.pem",
        CURLOPT_SSLKEY => "$certs/agency-$agency-key.pem",
        CURLOPT_CAINFO => "$certs/ca.pem",
        CURLOPT_POST => true,
        CURLOPT_POSTFIELDS => json_encode($body, JSON_THROW_ON_ERROR),
        CURLOPT_HTTPHEADER => ['content-type: application/json'],
    ]);
    return $ch;
}

/** POSTs $body; returns [HTTP status, the answer decoded (null if not JSON), its text]. */
function call(array $opt, string $path, array $body): array
{
    $ch = request($opt, $path, $body);
    curl_setopt($ch, CURLOPT_RETURNTRANSFER, true);
    $text = curl_exec($ch);
    if ($text === false) {
        throw new Failed("$path: " . curl_error($ch));
    }
    $status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
    return [$status, json_decode($text, true), $text];
}

/** Streams the query's records into $opt['out']; returns the first record. */
function streamQuery(array $opt): array
{
    $out = fopen($opt['out'], 'wb');
    $hash = hash_init('sha256');
    $pending = '';     // a line not yet ended by its newline
    $rows = 0;
    $first = null;
    $held = null;      // the last complete line: a record, or the receipt
    $errorBody = '';   // the answer when it is not a stream

    $ch = request($opt, '/exchange/v1/query', [
        'dataset' => DATASET,
        'purpose' => PURPOSE,
        'fields' => ['nik', 'nama_lengkap', 'tgl_lahir'],
        'filter' => ['predicate' => [
            'field' => 'kode_kecamatan', 'op' => 'OPERATOR_EQ', 'value' => $opt['district'],
        ]],
    ]);
    // Each chunk is handled as it arrives. The stream's last line is the
    // receipt (or an error), so one complete line is held back: when the
    // next one arrives, the held line is a record, hashed and written
    // exactly as received (never re-encoded). A partial line waits for the
    // rest of it in the next chunk.
    curl_setopt($ch, CURLOPT_WRITEFUNCTION, function ($ch, string $chunk) use (
        $out, $hash, &$pending, &$held, &$rows, &$first, &$errorBody
    ): int {
        if (curl_getinfo($ch, CURLINFO_RESPONSE_CODE) !== 200) {
            $errorBody .= $chunk;
            return strlen($chunk);
        }
        $pending .= $chunk;
        while (($nl = strpos($pending, "\n")) !== false) {
            if ($held !== null) {
                hash_update($hash, $held);
                fwrite($out, $held);
                $rows++;
                $first ??= json_decode($held, true, 512, JSON_THROW_ON_ERROR);
            }
            $held = substr($pending, 0, $nl + 1);
            $pending = substr($pending, $nl + 1);
        }
        return strlen($chunk);
    });
    $ok = curl_exec($ch);
    fclose($out);
    if ($ok === false) {
        throw new Failed('query: ' . curl_error($ch));
    }
    $status = curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
    if ($status !== 200) {
        throw new Failed("query answered $status: $errorBody");
    }
    $last = $held === null ? null : json_decode($held, true, 512, JSON_THROW_ON_ERROR);
    if (isset($last['error'])) {
        throw new Failed('the query stream ended in error: ' . json_encode($last['error']));
    }
    $receipt = $last['receipt'] ?? null;
    if ($receipt === null || $pending !== '') {
        throw new Failed('the query stream ended without a receipt');
    }
    $digest = hash_final($hash);
    $match = hash_equals($receipt['payloadSha256'], $digest);
    echo "query: $rows records written to {$opt['out']}\n";
    echo "  receipt: exchange {$receipt['exchangeId']}, audit entry #{$receipt['entrySeq']}, rows {$receipt['rows']}\n";
    echo "  payload hash $digest matches the receipt: " . ($match ? 'true' : 'false') . "\n";
    if (!$match || (int) $receipt['rows'] !== $rows) {
        throw new Failed("the receipt's payload hash {$receipt['payloadSha256']} ({$receipt['rows']} rows) does not match");
    }
    if ($first === null) {
        throw new Failed("the query for district {$opt['district']} returned no record");
    }
    return $first;
}

/** Looks up the first record's key, verifying one right and one wrong value. */
function lookup(array $opt, array $first): void
{
    $nik = $first['nik'];
    [$status, $answer, $text] = call($opt, '/exchange/v1/lookup', [
        'dataset' => DATASET,
        'purpose' => PURPOSE,
        'fields' => ['nik', 'nama_lengkap'],
        'key' => $nik,   // a NIK is text: give it as a string
        'verify' => ['nama_lengkap' => $first['nama_lengkap'], 'tgl_lahir' => '1900-01-01'],
    ]);
    if ($status !== 200 || !is_array($answer)) {
        throw new Failed("lookup answered $status: $text");
    }
    echo "lookup: key $nik found: " . ($answer['found'] ? 'true' : 'false') . "\n";
    $verified = $answer['verified'];
    ksort($verified);
    foreach ($verified as $field => $matched) {
        echo "  verify $field: " . ($matched ? 'matched' : 'did not match') . "\n";
    }
    // `record` is the record's exact JSON text, as the receipt's hash covers it.
    $digest = hash('sha256', $answer['found'] ? $answer['record'] . "\n" : '');
    $match = hash_equals($answer['receipt']['payloadSha256'], $digest);
    echo "  receipt: audit entry #{$answer['receipt']['entrySeq']}, payload hash matches: " . ($match ? 'true' : 'false') . "\n";
    if (!$answer['found']) {
        throw new Failed("the lookup did not find $nik");
    }
    if (!$match) {
        throw new Failed("the lookup's payload hash $digest is not the receipt's {$answer['receipt']['payloadSha256']}");
    }
    if (($verified['nama_lengkap'] ?? null) !== true || ($verified['tgl_lahir'] ?? null) !== false) {
        throw new Failed('expected nama_lengkap to match and tgl_lahir not to, got ' . json_encode($verified));
    }
}

/** Asks for a field the agreement does not grant and prints the reason codes. */
function denied(array $opt): void
{
    [$status, $answer, $text] = call($opt, '/exchange/v1/query', [
        'dataset' => DATASET, 'purpose' => PURPOSE, 'fields' => ['nik', 'agama'], 'limit' => 1,
    ]);
    if ($status === 200) {
        throw new Failed('the request for a field not granted was not denied');
    }
    $error = is_array($answer) ? ($answer['error'] ?? []) : [];
    echo 'denied: HTTP ' . $status . ' ' . ($error['code'] ?? '?') . ': ' . ($error['message'] ?? $text) . "\n";
    $reasons = $error['reasons'] ?? [];
    if ($status !== 403 || $reasons === []) {
        throw new Failed("no reason codes in the denial: $text");
    }
    echo "  audit entry #{$error['auditIndex']}, exchange {$error['exchangeId']}\n";
    foreach ($reasons as $r) {
        echo "  reason {$r['reason']} ({$r['code']}), agreement {$r['agreementId']}, fields " . json_encode($r['fields']) . "\n";
    }
}

$opt = getopt('', ['certs:', 'broker:', 'agency:', 'district:', 'out:']) + [
    'agency' => 'dinsos', 'district' => '15.07.01', 'out' => 'records.jsonl',
];
if (!isset($opt['certs'], $opt['broker'])) {
    fwrite(STDERR, "usage: php client.php --certs DIR --broker https://HOST:PORT [--agency ID] [--district CODE] [--out FILE]\n");
    exit(2);
}
$opt['broker'] = rtrim($opt['broker'], '/');
try {
    $first = streamQuery($opt);
    lookup($opt, $first);
    denied($opt);
} catch (Failed | JsonException $e) {
    fwrite(STDERR, 'FAILED: ' . $e->getMessage() . "\n");
    exit(1);
}
echo "php: all checks passed\n";
