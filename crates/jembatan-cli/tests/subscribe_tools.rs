//! `jembatan subscribe` against a kept demo whose population registry
//! declares a change source: the catch-up to JSONL with every batch's
//! receipt checked, changed rows (a death, a move out of the district, a
//! new name, a row never in scope) delivered after a resume from the
//! cursor file with nothing lost and nothing twice, a closed output pipe,
//! a denial and a revocation (exit 3); and the NATS JetStream sink
//! against the server at `JEMBATAN_TEST_NATS_URL`, read back from the
//! stream, a batch delivered again after a restart from an older cursor
//! dropped by JetStream as a duplicate.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Demo, Running};

const DATASET: &str = "disdukcapil.penduduk";
const PURPOSE: &str = "pendataan sasaran imunisasi";
/// The district the agreement's row filter lets through.
const KEC: &str = "15.07.01";

/// The change source the population registry's dataset declares: every
/// row carries a change time; a death is a tombstone.
const CHANGES: &str = r#"
[datasets.changes]
column = "diubah"
deleted = { field = "status", op = "eq", value = "MENINGGAL" }
lag = "0s"
poll_interval = "50ms"
"#;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// The population registry's database in a kept demo.
fn database(keep: &Path) -> String {
    format!("sqlite://{}", keep.join("data/disdukcapil.db").display())
}

/// Runs SQL statements on the population registry's database.
fn sql(keep: &Path, statements: &[&str]) {
    let url = database(keep);
    runtime().block_on(async {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        for s in statements {
            sqlx::query(sqlx::AssertSqlSafe(s.to_string()))
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    });
}

/// `(nik, kode_kecamatan, status)` of every resident.
fn residents(keep: &Path) -> Vec<(String, String, String)> {
    let url = database(keep);
    runtime().block_on(async {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let rows = sqlx::query_as("SELECT nik, kode_kecamatan, status FROM penduduk ORDER BY nik")
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows
    })
}

/// A demo whose residents all carry one change time and whose adapter's
/// change source has tombstones and quick polls; `dinkes` holds an agreement with the `subscribe`
/// term for the district's residents.
fn demo() -> Demo {
    let demo = Demo::start_with(false, |keep| {
        // every resident changed at one time (ties), in the past
        sql(
            keep,
            &["UPDATE penduduk SET diubah = '2020-01-01T00:00:00'"],
        );
        // the demo's change source, with tombstones and quicker polls
        let config = keep.join("adapter-disdukcapil.toml");
        let text = std::fs::read_to_string(&config).unwrap();
        let demo_source = "[datasets.changes]\ncolumn = \"diubah\"\nkey = \"nik\"\npoll_interval = \"250ms\"\nlag = \"250ms\"\n";
        assert!(text.contains(demo_source), "{text}");
        let text = text.replacen(demo_source, CHANGES.trim_start(), 1);
        std::fs::write(&config, text).unwrap();
    });
    let filter = format!(r#"{{"field":"kode_kecamatan","op":"eq","value":"{KEC}"}}"#);
    demo.agreement(
        "agency-dinkes",
        &[
            "propose",
            "--id",
            "sub-imunisasi",
            "--dataset",
            DATASET,
            "--purpose",
            PURPOSE,
            "--field",
            "nik",
            "--field",
            "nama_lengkap",
            "--field",
            "kode_kecamatan",
            "--field",
            "status",
            "--row-filter",
            &filter,
            "--subscribe",
        ],
    );
    demo.agreement("agency-disdukcapil", &["approve", "sub-imunisasi"]);
    demo
}

/// `jembatan subscribe` as `who` with `extra` arguments, in batches of 10
/// unless they say otherwise.
fn subscribe(demo: &Demo, who: &str, extra: &[&str]) -> std::process::Command {
    let mut args = vec!["subscribe", "--dataset", DATASET, "--purpose", PURPOSE];
    if !extra.contains(&"--batch-size") {
        args.extend(["--batch-size", "10"]);
    }
    args.extend_from_slice(extra);
    demo.command(who, &args)
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Changes that reach dinkes, and some that do not, each a second later
/// than the last: `(death, move, rename, outside)` niks.
fn change_rows(keep: &Path, second: &mut u32) -> [String; 4] {
    let all = residents(keep);
    let inside: Vec<&String> = all
        .iter()
        .filter(|(_, k, s)| k == KEC && s != "MENINGGAL")
        .map(|(n, _, _)| n)
        .collect();
    let outside = all
        .iter()
        .find(|(_, k, s)| k != KEC && s == "HIDUP")
        .map(|(n, _, _)| n.clone())
        .unwrap();
    let (death, moved, renamed) = (inside[0].clone(), inside[1].clone(), inside[2].clone());
    let mut at = || {
        *second += 1;
        format!("2020-01-02T00:00:{:02}", *second)
    };
    sql(
        keep,
        &[
            &format!(
                "UPDATE penduduk SET status = 'MENINGGAL', diubah = '{}' WHERE nik = '{death}'",
                at()
            ),
            &format!(
                "UPDATE penduduk SET kode_kecamatan = '15.07.02', diubah = '{}' WHERE nik = '{moved}'",
                at()
            ),
            &format!(
                "UPDATE penduduk SET nama_lengkap = 'NAMA BARU', diubah = '{}' WHERE nik = '{renamed}'",
                at()
            ),
            &format!(
                "UPDATE penduduk SET nama_lengkap = 'LUAR', diubah = '{}' WHERE nik = '{outside}'",
                at()
            ),
        ],
    );
    [death, moved, renamed, outside]
}

#[test]
fn follow_resume_and_stop_from_the_command_line() {
    let demo = demo();
    let keep = demo.keep.clone();
    let dir = demo.dir.path();
    let out_file = dir.join("changes.jsonl");
    let cursor_file = dir.join("state/cursor");
    std::fs::create_dir_all(cursor_file.parent().unwrap()).unwrap();
    let (out_arg, cursor_arg) = (
        out_file.to_str().unwrap().to_owned(),
        cursor_file.to_str().unwrap().to_owned(),
    );
    let follow = [
        "--out",
        out_arg.as_str(),
        "--cursor-file",
        cursor_arg.as_str(),
        "--idle-exit",
        "3s",
    ];

    // the catch-up: every resident of the district, once, as upserts
    let out = subscribe(&demo, "agency-dinkes", &follow).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("from the first change"), "{stderr}");
    assert!(
        stderr.contains("batch 1: 10 changes (10 upserts, 0 deletes)"),
        "{stderr}"
    );
    assert!(stderr.contains("no change for 3s"), "{stderr}");
    let want: Vec<String> = residents(&keep)
        .into_iter()
        .filter(|(_, k, s)| k == KEC && s != "MENINGGAL")
        .map(|(n, _, _)| n)
        .collect();
    let first = lines(&out_file);
    assert_eq!(first.len(), want.len());
    let mut handles: HashMap<String, String> = HashMap::new();
    for (line, nik) in first.iter().zip(&want) {
        assert_eq!(line["op"], "upsert", "{line}");
        assert_eq!(line["record"]["nik"], nik.as_str(), "in change order");
        assert_eq!(line["record"]["kode_kecamatan"], KEC);
        let key = line["key"].as_str().unwrap();
        assert_eq!(key.len(), 64, "a keyed hash, never the key: {key}");
        assert!(!key.contains(nik.as_str()));
        handles.insert(nik.clone(), key.to_owned());
    }
    let cursor = std::fs::read_to_string(&cursor_file).unwrap();
    assert!(cursor.starts_with("c1."), "{cursor}");
    assert_eq!(
        std::fs::read_dir(cursor_file.parent().unwrap())
            .unwrap()
            .count(),
        1,
        "no temporary file is left beside the cursor file"
    );

    // nothing new: a resume delivers nothing, the file is unchanged
    let out = subscribe(&demo, "agency-dinkes", &follow).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("resumed from the cursor file"),
        "{}",
        text(&out)
    );
    assert_eq!(lines(&out_file).len(), want.len());

    // changed rows: a death and a move become deletes of keys given
    // before, a new name an upsert, a row never in scope nothing
    let mut second = 0;
    let [death, moved, renamed, _outside] = change_rows(&keep, &mut second);
    let out = subscribe(&demo, "agency-dinkes", &follow).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = lines(&out_file);
    let new = &all[want.len()..];
    let seen: Vec<(&str, &str)> = new
        .iter()
        .map(|l| (l["op"].as_str().unwrap(), l["key"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            ("delete", handles[&death].as_str()),
            ("delete", handles[&moved].as_str()),
            ("upsert", handles[&renamed].as_str()),
        ],
        "{new:?}"
    );
    assert_eq!(new[0]["record"], serde_json::json!({ "nik": death }));
    assert_eq!(new[2]["record"]["nama_lengkap"], "NAMA BARU");

    // standard output: a reader that goes away ends the command quietly
    let mut child = Running(
        subscribe(&demo, "agency-dinkes", &["--quiet"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut first_line = String::new();
    BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    assert!(first_line.starts_with("{\"op\":\"upsert\""), "{first_line}");
    // the reader is gone; the next batch finds the pipe closed
    change_rows(&keep, &mut second);
    let status = wait(&mut child, Duration::from_secs(30));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");

    // no agreement: denied, exit 3
    let out = subscribe(&demo, "agency-bpn", &["--idle-exit", "2s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("denied"),
        "{}",
        text(&out)
    );

    // a receipt cannot be faked here: the checker's own test is in
    // src/subscribe.rs; a cursor altered in a byte is refused, and the
    // cursor file is left as it was
    let good = std::fs::read_to_string(&cursor_file).unwrap();
    let mut bad = good.trim().as_bytes().to_vec();
    let last = bad.len() - 2;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    std::fs::write(&cursor_file, &bad).unwrap();
    let out = subscribe(&demo, "agency-dinkes", &follow).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was not issued to this agency"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&cursor_file).unwrap(), bad);
    std::fs::write(&cursor_file, &good).unwrap();

    // a revoked agreement ends a running subscription: exit 3
    let mut child = Running(
        subscribe(&demo, "agency-dinkes", &follow[..4])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_secs(2));
    demo.agreement(
        "agency-disdukcapil",
        &["revoke", "sub-imunisasi", "--reason", "program selesai"],
    );
    let status = wait(&mut child, Duration::from_secs(30));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("revoked"), "{stderr}");
}

fn wait(child: &mut Running, limit: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < limit, "the command did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The NATS server of the tests, when one answers.
fn nats_url() -> Option<String> {
    let Ok(url) = std::env::var("JEMBATAN_TEST_NATS_URL") else {
        println!("skipped: no NATS (JEMBATAN_TEST_NATS_URL is not set)");
        return None;
    };
    let reachable = runtime().block_on(async {
        tokio::time::timeout(Duration::from_secs(5), async_nats::connect(url.as_str()))
            .await
            .is_ok_and(|c| c.is_ok())
    });
    if !reachable {
        println!("skipped: no NATS at {url}");
        return None;
    }
    Some(url)
}

/// Every message of the stream `name`: its `Nats-Msg-Id` and payload.
fn stream_messages(url: &str, name: &str) -> Vec<(String, String)> {
    runtime().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let mut stream = js.get_stream(name).await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            let m = stream.get_raw_message(seq).await.unwrap();
            let id = m
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            out.push((id, String::from_utf8(m.payload.to_vec()).unwrap()));
        }
        out
    })
}

fn delete_stream(url: &str, name: &str) {
    runtime().block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
        let _ = js.delete_stream(name).await;
    });
}

#[test]
fn changes_published_to_nats_jetstream() {
    let Some(url) = nats_url() else {
        return;
    };
    let demo = demo();
    let dir = demo.dir.path();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let tag = format!("{}_{nanos}", std::process::id());
    let subject = format!("jembatan.test.penduduk.{tag}");
    let stream = format!("JEMBATAN_TEST_{tag}");
    let cursor_file = dir.join("cursor");
    let cursor_arg = cursor_file.to_str().unwrap().to_owned();
    let nats = [
        "--nats",
        url.as_str(),
        "--nats-subject",
        subject.as_str(),
        "--cursor-file",
        cursor_arg.as_str(),
        "--idle-exit",
        "3s",
    ];

    // no stream captures the subject: refused before anything flows
    let out = subscribe(&demo, "agency-dinkes", &nats).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no JetStream stream"),
        "{}",
        text(&out)
    );
    assert!(!cursor_file.exists());

    let mut create = nats.to_vec();
    create.extend(["--nats-create-stream", stream.as_str()]);
    let out = subscribe(&demo, "agency-dinkes", &create).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let caught_up = stream_messages(&url, &stream);
    let want = residents(&demo.keep)
        .into_iter()
        .filter(|(_, k, s)| k == KEC && s != "MENINGGAL")
        .count();
    assert_eq!(caught_up.len(), want);
    for (id, payload) in &caught_up {
        assert_eq!(id.len(), 32, "{id}");
        let line: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(line["op"], "upsert");
    }
    let older = std::fs::read_to_string(&cursor_file).unwrap();

    // three changes reach the subject
    let mut second = 0;
    change_rows(&demo.keep, &mut second);
    let out = subscribe(&demo, "agency-dinkes", &nats).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let after = stream_messages(&url, &stream);
    assert_eq!(after.len(), want + 3);
    let ops: Vec<String> = after[want..]
        .iter()
        .map(|(_, p)| serde_json::from_str::<Value>(p).unwrap()["op"].to_string())
        .collect();
    assert_eq!(ops, ["\"delete\"", "\"delete\"", "\"upsert\""]);

    // a restart from the older cursor (as after a crash before the
    // cursor file was written) delivers the batch again: JetStream drops
    // every message as a duplicate
    std::fs::write(&cursor_file, &older).unwrap();
    let out = subscribe(&demo, "agency-dinkes", &nats).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("batch 1: 3 changes"),
        "{}",
        text(&out)
    );
    assert_eq!(stream_messages(&url, &stream), after);
    delete_stream(&url, &stream);
}

#[test]
fn a_follower_killed_mid_stream_resumes_without_losing_a_change() {
    let demo = demo();
    let dir = demo.dir.path();
    let out_file = dir.join("changes.jsonl");
    let cursor_file = dir.join("cursor");
    let (out_arg, cursor_arg) = (
        out_file.to_str().unwrap().to_owned(),
        cursor_file.to_str().unwrap().to_owned(),
    );
    let follow = [
        "--out",
        out_arg.as_str(),
        "--cursor-file",
        cursor_arg.as_str(),
        "--batch-size",
        "1",
        "--quiet",
    ];
    let want: Vec<String> = residents(&demo.keep)
        .into_iter()
        .filter(|(_, k, s)| k == KEC && s != "MENINGGAL")
        .map(|(n, _, _)| n)
        .collect();
    // SIGKILL once some batches are written: whatever it was doing
    let mut child = Running(subscribe(&demo, "agency-dinkes", &follow).spawn().unwrap());
    let started = Instant::now();
    while std::fs::read_to_string(&out_file)
        .unwrap_or_default()
        .lines()
        .count()
        < 10
    {
        assert!(started.elapsed() < Duration::from_secs(30), "no lines");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let before = lines(&out_file).len();
    assert!(before < want.len(), "killed before the end: {before}");

    let mut resume = follow.to_vec();
    resume.extend(["--idle-exit", "3s"]);
    let out = subscribe(&demo, "agency-dinkes", &resume).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // every change once, but the one batch (of one change) that may have
    // been written and not yet kept by its cursor
    let niks: Vec<String> = lines(&out_file)
        .iter()
        .map(|l| l["record"]["nik"].as_str().unwrap().to_owned())
        .collect();
    println!(
        "killed after {before} of {} lines; {} written twice",
        want.len(),
        niks.len() - want.len()
    );
    let mut unique = niks.clone();
    unique.dedup();
    assert_eq!(unique, want, "in change order, none lost");
    assert!(
        niks.len() - want.len() <= 1,
        "{} lines twice",
        niks.len() - want.len()
    );
}
