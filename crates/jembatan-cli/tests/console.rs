//! `jembatan console` against a broker started from a kept demo: the
//! access rules (login, one-time token, CSRF, roles), the pages an
//! auditor reads, the operator's approval with its confirmation step,
//! an agency's proposal, approval and revocation from its own console,
//! and that a NIK looked up never reaches the console's log.

mod support;

use support::{Client, Demo, jembatan};

fn status_of(demo: &Demo, id: &str) -> String {
    let json = demo.agreement("auditor", &["get", id, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["status"].as_str().unwrap().to_owned()
}

#[test]
fn a_console_refuses_to_start_with_an_integrator_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    for args in [
        vec!["pki", "init", "--dir"],
        vec![
            "pki", "issue", "--role", "agency", "--agency", "dinkes", "--dir",
        ],
        vec![
            "pki",
            "issue",
            "--role",
            "integrator",
            "--agency",
            "dinsos",
            "--dir",
        ],
    ] {
        let out = jembatan().args(&args).arg(&ca).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // an agency's certificate is a console's (this one finds no broker);
    // an integrator's is not
    for (who, refused) in [("agency-dinkes", false), ("integrator-dinsos", true)] {
        let config = dir.path().join(format!("{who}.toml"));
        std::fs::write(
            &config,
            format!(
                "version = 1\nbroker = \"https://localhost:1\"\n[tls]\nca = \"ca/ca.pem\"\ncert = \"ca/{who}.pem\"\nkey = \"ca/{who}-key.pem\"\n"
            ),
        )
        .unwrap();
        let out = jembatan()
            .args(["console", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{who}: {err}");
        assert_eq!(
            err.contains("a console needs an auditor's, an operator's or an agency's certificate"),
            refused,
            "{who}: {err}"
        );
        if !refused {
            assert!(err.contains("cannot reach the broker"), "{who}: {err}");
        }
    }
    // and a config that is not one
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "version = 1\nbroker = \"http://x\"\n").unwrap();
    let out = jembatan()
        .args(["console", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn hash_password_prints_an_argon2id_hash_and_refuses_short_passwords() {
    use std::io::Write;
    let run = |password: &str| {
        let mut child = jembatan()
            .args(["console", "hash-password"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("panjang sekali rahasianya");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("$argon2id$"));
    assert!(!run("pendek").status.success());
}

#[test]
fn the_console_on_a_running_broker() {
    let demo = Demo::start();
    demo.agreement_awaiting_an_operator("pks-uji-konsol");
    let auditor_log = demo.dir.path().join("console-auditor.log");
    let auditor = demo.console("console.toml", &auditor_log);
    let mut web = Client::new(auditor.port);

    // no login: every page sends to the login page, which says where to return
    for path in ["/", "/exchanges", "/entries/0", "/who", "/agreements"] {
        let r = web.get(path);
        assert_eq!(r.status, 303, "{path}");
        assert!(
            r.header("location").unwrap().starts_with("/login?next="),
            "{path}"
        );
    }
    let r = web.get("/entries/0/proof.json");
    assert_eq!(r.status, 303, "the proof needs a login too");
    // a POST without a session does nothing either
    let r = web.post(
        "/who",
        &[
            ("csrf", "x"),
            ("dataset", "disdukcapil.penduduk"),
            ("key", &demo.nik),
        ],
    );
    assert_eq!(r.status, 303);

    // a wrong token is refused, the login form's CSRF token is required
    let form = web.get("/login");
    assert_eq!(form.status, 200);
    let csrf = form.hidden("csrf");
    let r = web.post(
        "/login",
        &[("csrf", &csrf), ("token", "0000"), ("next", "/")],
    );
    assert_eq!(r.status, 401);
    assert!(
        !web.cookies
            .keys()
            .any(|k| k.starts_with("jembatan_console"))
    );
    let mut stranger = Client::new(auditor.port);
    let r = stranger.post("/login", &[("csrf", &csrf), ("token", &auditor.token)]);
    assert_eq!(
        r.status, 403,
        "a login form not from this browser is refused"
    );
    let r = web.send(
        "POST",
        "/login",
        Some(format!("csrf={csrf}&token={}", auditor.token)),
        &[("Origin", "http://evil.example")],
    );
    assert_eq!(
        r.status, 403,
        "a login posted from another origin is refused"
    );

    // the token logs in once; the cookie is HttpOnly and SameSite=Strict
    let r = web.login(&auditor.token);
    assert_eq!(r.status, 303, "{}", r.body);
    let set = r.header("set-cookie").unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let mut late = Client::new(auditor.port);
    assert_eq!(
        late.login(&auditor.token).status,
        401,
        "the token works once"
    );

    // the overview and the denied exchanges, in words, in the browser's language
    let r = web.get("/");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("<svg"), "the chart is drawn on the server");
    assert!(r.body.contains("no_agreement"));
    for service in ["Exchange", "Agreements", "Registry", "Audit"] {
        assert!(
            r.body
                .contains(&format!("{service}: <span class=\"ok\">serving</span>")),
            "{service} health: {}",
            r.body
        );
    }
    let r = web.send(
        "GET",
        "/exchanges?decision=deny",
        None,
        &[("Accept-Language", "en-GB,en;q=0.9")],
    );
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<html lang=\"en\">"));
    assert!(
        r.body
            .contains("Dinas Kesehatan (dinkes) was denied disdukcapil.penduduk"),
        "{}",
        r.body
    );
    let seq: u64 = r
        .body
        .split("href=\"/entries/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .parse()
        .unwrap();
    let r = web.get("/exchanges?decision=deny");
    assert!(
        r.body.contains("<html lang=\"id\">"),
        "Indonesian without a preference"
    );
    assert!(r.body.contains("ditolak mengakses"));
    let r = web.get("/lang?to=en&back=/exchanges");
    assert_eq!(r.header("location"), Some("/exchanges"));
    assert!(
        web.get("/exchanges").body.contains("<html lang=\"en\">"),
        "the switch wins"
    );
    let r = web.get("/lang?to=en&back=//evil.example/");
    assert_eq!(
        r.header("location"),
        Some("/"),
        "the switch goes back only to this console"
    );

    // filters the broker refuses, and times that are not times, are said so
    let r = web.get("/exchanges?from=kemarin");
    assert!(r.body.contains("is not a date"), "{}", r.body);
    let r = web.get("/exchanges?agency=Not%20An%20Id");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("The broker refused"));

    // an entry, its raw JSON, and a proof that verifies
    let r = web.get(&format!("/entries/{seq}"));
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("&quot;decision&quot;:&quot;deny&quot;") || r.body.contains("\"decision\"")
    );
    assert!(r.body.contains("/assets/proof.js"));
    let r = web.get(&format!("/entries/{seq}/proof.json"));
    assert_eq!(r.status, 200, "{}", r.body);
    let proof: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(proof["seq"], seq);
    assert!(
        proof["verifier_key"]
            .as_str()
            .unwrap()
            .starts_with("jembatan.local/audit-log+")
    );
    assert!(
        proof["checkpoint"]["note"]
            .as_str()
            .unwrap()
            .contains("\n\n— ")
    );
    assert_eq!(web.get("/entries/999999").status, 404);
    assert_eq!(web.get("/assets/proof.js").status, 200);

    // exports of the current filter
    let r = web.get("/exchanges/export?format=csv&decision=deny");
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-disposition")
            .unwrap()
            .contains("jembatan-audit.csv")
    );
    let mut lines = r.body.lines();
    assert!(lines.next().unwrap().starts_with("seq,time,kind"));
    assert!(
        lines.clone().count() >= 4 && lines.all(|l| l.contains(",deny,")),
        "{}",
        r.body
    );
    let r = web.get("/exchanges/export?format=jsonl&decision=deny");
    for line in r.body.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["entry"]["decision"], "deny");
    }

    // who accessed this person: POST with the session's CSRF token only
    let page = web.get("/who");
    let csrf = page.hidden("csrf");
    let r = web.post(
        "/who",
        &[
            ("csrf", "forged"),
            ("dataset", "disdukcapil.penduduk"),
            ("key", &demo.nik),
        ],
    );
    assert_eq!(r.status, 403);
    let r = web.post(
        "/who",
        &[
            ("csrf", &csrf),
            ("dataset", "disdukcapil.penduduk"),
            ("key", &demo.nik),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("href=\"/entries/"),
        "the lookups of this NIK are listed: {}",
        r.body
    );
    assert!(
        !r.body.contains(&demo.nik),
        "the page does not show the NIK back"
    );

    // the registry: datasets, versions, and the broker's verdict on a new schema
    let r = web.get("/registry");
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("href=\"/registry/disdukcapil.penduduk\""),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("disdukcapil.penduduk@1") && r.body.contains("dinsos.warga@1"),
        "the mappings between schemas are listed: {}",
        r.body
    );
    let r = web.get("/registry/disdukcapil.penduduk");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("sha256:"));
    assert!(
        r.body.contains("<ul class=\"mappings\">") && r.body.contains("&quot;target&quot;"),
        "the dataset's mapping with its document: {}",
        r.body
    );
    let narrowed = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","properties":{"nik":{"type":"integer"}},"required":["nik"]}"#;
    let r = web.post(
        "/registry/disdukcapil.penduduk/check",
        &[("csrf", "forged"), ("schema", narrowed)],
    );
    assert_eq!(r.status, 403);
    let r = web.post(
        "/registry/disdukcapil.penduduk/check",
        &[("csrf", &csrf), ("schema", narrowed)],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("type_changed") && r.body.contains("nik"),
        "{}",
        r.body
    );
    let r = web.post(
        "/registry/disdukcapil.penduduk/check",
        &[("csrf", &csrf), ("schema", "not json")],
    );
    assert_eq!(r.status, 400, "{}", r.body);

    // an auditor reads agreements but cannot approve them
    let r = web.get("/agreements");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("pks-uji-konsol"));
    let r = web.get("/agreements/pks-uji-konsol");
    assert!(
        !r.body.contains("id=\"approve\""),
        "no approve button for an auditor"
    );
    assert!(
        r.body.contains("id=\"quota-use\""),
        "the quota used, as the broker counts it: {}",
        r.body
    );
    let r = web.post(
        "/agreements/pks-uji-konsol/approve",
        &[("csrf", &csrf), ("confirm", "yes")],
    );
    assert_eq!(r.status, 403);
    assert!(r.body.contains("operator"), "{}", r.body);

    // an operator approves, after a confirmation step
    let operator_log = demo.dir.path().join("console-operator.log");
    let operator = demo.console("console-operator.toml", &operator_log);
    let mut op = Client::new(operator.port);
    assert_eq!(op.login(&operator.token).status, 303);
    let r = op.get("/exchanges");
    assert_eq!(r.status, 403, "the audit log is for auditor certificates");
    let r = op.get("/agreements/pks-uji-konsol");
    assert!(r.body.contains("id=\"approve\""), "{}", r.body);
    let csrf = r.hidden("csrf");
    let r = op.post("/agreements/pks-uji-konsol/approve", &[("csrf", "forged")]);
    assert_eq!(r.status, 403, "CSRF refused");
    let r = op.post("/agreements/pks-uji-konsol/approve", &[("csrf", &csrf)]);
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("name=\"confirm\" value=\"yes\""),
        "a confirmation page first"
    );
    assert_eq!(status_of(&demo, "pks-uji-konsol"), "provider_approved");
    let r = op.post(
        "/agreements/pks-uji-konsol/approve",
        &[("csrf", &csrf), ("confirm", "yes")],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        r.header("location"),
        Some("/agreements/pks-uji-konsol?done=approve")
    );
    assert_eq!(status_of(&demo, "pks-uji-konsol"), "approved");
    let r = web.get("/agreements/pks-uji-konsol");
    assert!(
        r.body
            .contains("operator: approve agreement pks-uji-konsol (now approved)"),
        "the auditor sees the operator's step in the history: {}",
        r.body
    );

    // every page view that reads the log is itself on the log: an
    // audit_read entry naming the console's auditor certificate
    let log = |web: &mut Client| -> Vec<serde_json::Value> {
        web.get("/exchanges/export?format=jsonl")
            .body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let before = log(&mut web).len();
    for path in [
        "/",
        "/exchanges",
        &format!("/entries/{seq}"),
        &format!("/entries/{seq}/proof.json"),
    ] {
        assert_eq!(web.get(path).status, 200, "{path}");
    }
    let after = log(&mut web);
    let reads: Vec<&serde_json::Value> = after[before..].iter().map(|e| &e["entry"]).collect();
    assert!(reads.len() >= 5, "{reads:?}");
    for read in &reads {
        assert_eq!(read["kind"], "audit_read", "{read}");
        assert_eq!(read["caller"], "auditor", "{read}");
    }
    let operations: Vec<&str> = reads
        .iter()
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    assert!(
        operations.contains(&"audit.query_entries"),
        "{operations:?}"
    );
    assert!(
        operations.contains(&"audit.inclusion_proof"),
        "{operations:?}"
    );
    // the look at the NIK's history is on the log by its keyed hash
    let looked = after
        .iter()
        .find(|e| e["entry"]["operation"] == "audit.subject_lookup")
        .expect("the who-accessed page is on the log");
    assert_eq!(looked["entry"]["subject_hash"].as_str().unwrap().len(), 64);
    // and an entry page tells a read in words
    let read_seq = after[before]["seq"].as_u64().unwrap();
    let r = web.get(&format!("/entries/{read_seq}"));
    assert!(
        r.body.contains("read") && r.body.contains("entries of the audit log"),
        "{}",
        r.body
    );

    // verify the whole log through the Audit service: it holds; then one
    // entry is altered in the store and the verification names it
    let verify = |web: &mut Client| {
        let csrf = web.get("/verify").hidden("csrf");
        assert_eq!(web.post("/verify", &[("csrf", &csrf)]).status, 303);
        let started = std::time::Instant::now();
        loop {
            let page = web.get("/verify");
            if let Some(rest) = page.body.split("id=\"verify-result\" class=\"").nth(1) {
                return rest.split("</p>").next().unwrap().to_owned();
            }
            assert!(started.elapsed().as_secs() < 60, "{}", page.body);
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let result = verify(&mut web);
    assert!(
        result.starts_with("ok\"") && result.contains("The log verifies"),
        "{result}"
    );
    let store = demo.keep.join("broker.db");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", store.display()))
            .await
            .unwrap();
        sqlx::query("DROP TRIGGER audit_log_no_update")
            .execute(&mut db)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE audit_log SET entry = CAST(replace(CAST(entry AS TEXT), '\"deny\"', '\"allow\"') AS BLOB) WHERE seq = ?",
        )
        .bind(i64::try_from(seq).unwrap())
        .execute(&mut db)
        .await
        .unwrap();
    });
    let result = verify(&mut web);
    assert!(
        result.starts_with("error\"") && result.contains(&format!("Entry {seq} is altered")),
        "{result}"
    );

    // logging out ends the session
    let r = op.post("/logout", &[("csrf", &csrf)]);
    assert_eq!(r.status, 303);
    assert_eq!(op.get("/agreements").status, 303);

    // the NIK reached neither console's log, at trace level
    drop(auditor);
    drop(operator);
    for log in [&auditor_log, &operator_log] {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            text.len() > 1000,
            "the console logged at trace level: {text}"
        );
        assert!(!text.contains(&demo.nik), "{} holds the NIK", log.display());
    }
}

/// A console config for `who`'s certificate, from the operator's.
fn agency_console(demo: &Demo, who: &str) -> String {
    let name = format!("console-{who}.toml");
    let text = std::fs::read_to_string(demo.keep.join("console-operator.toml")).unwrap();
    let text = text.replace("certs/operator", &format!("certs/{who}"));
    assert!(text.contains(&format!("certs/{who}.pem")), "{text}");
    std::fs::write(demo.keep.join(&name), text).unwrap();
    name
}

#[test]
fn agencies_propose_approve_and_revoke_from_their_consoles() {
    let demo = Demo::start();
    let dinkes_log = demo.dir.path().join("console-dinkes.log");
    let dinkes = demo.console(&agency_console(&demo, "agency-dinkes"), &dinkes_log);
    let mut consumer = Client::new(dinkes.port);
    assert_eq!(consumer.login(&dinkes.token).status, 303);

    // the proposal form lists the other agencies' datasets, not its own
    let r = consumer.get("/propose");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("<option value=\"disdukcapil.penduduk\""),
        "{}",
        r.body
    );
    assert!(!r.body.contains("<option value=\"dinkes."), "{}", r.body);
    assert!(
        r.body.contains("href=\"/propose\""),
        "the agency's nav offers it"
    );
    let csrf = r.hidden("csrf");
    let terms = |fields: &str| {
        vec![
            ("csrf", csrf.clone()),
            ("id", "pks-usul-konsol".to_owned()),
            ("dataset", "disdukcapil.penduduk".to_owned()),
            ("purpose", "pendataan sasaran imunisasi".to_owned()),
            ("fields", fields.to_owned()),
            ("rows_per_day", "500".to_owned()),
        ]
    };
    let form = |pairs: &[(&'static str, String)]| {
        pairs
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect::<Vec<(&str, String)>>()
    };
    let post = |c: &mut Client, pairs: Vec<(&str, String)>| {
        let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        c.post("/propose", &refs)
    };
    // a grant that is none is said so, naming it
    let r = post(&mut consumer, form(&terms("nik:write")));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("nik:write"), "{}", r.body);
    // CSRF refused
    let mut forged = form(&terms("nik"));
    forged[0].1 = "forged".into();
    assert_eq!(post(&mut consumer, forged).status, 403);
    // the terms first, then the step
    let r = post(&mut consumer, form(&terms("nik\nkode_desa")));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("name=\"confirm\" value=\"yes\""),
        "{}",
        r.body
    );
    assert!(r.body.contains("disdukcapil → dinkes"), "{}", r.body);
    let certs = demo.keep.join("certs");
    let out = jembatan()
        .args(["agreement", "get", "pks-usul-konsol", "--broker"])
        .arg(format!("https://localhost:{}", demo.broker_port))
        .arg("--ca")
        .arg(certs.join("ca.pem"))
        .arg("--cert")
        .arg(certs.join("auditor.pem"))
        .arg("--key")
        .arg(certs.join("auditor-key.pem"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "nothing is proposed before the confirmation: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut confirmed = form(&terms("nik\nkode_desa"));
    confirmed.push(("confirm", "yes".into()));
    let r = post(&mut consumer, confirmed);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        r.header("location"),
        Some("/agreements/pks-usul-konsol?done=propose")
    );
    assert_eq!(status_of(&demo, "pks-usul-konsol"), "proposed");
    // the consumer cannot approve its own proposal
    let r = consumer.get("/agreements/pks-usul-konsol");
    assert!(!r.body.contains("id=\"approve\""), "{}", r.body);
    assert!(r.body.contains("id=\"revoke\""), "either agency revokes");
    let r = consumer.post(
        "/agreements/pks-usul-konsol/approve",
        &[("csrf", &csrf), ("confirm", "yes")],
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(status_of(&demo, "pks-usul-konsol"), "proposed");

    // the provider approves from its console, after the confirmation step
    let provider_log = demo.dir.path().join("console-disdukcapil.log");
    let disdukcapil = demo.console(&agency_console(&demo, "agency-disdukcapil"), &provider_log);
    let mut provider = Client::new(disdukcapil.port);
    assert_eq!(provider.login(&disdukcapil.token).status, 303);
    let r = provider.get("/agreements/pks-usul-konsol");
    assert!(r.body.contains("id=\"approve\""), "{}", r.body);
    let pcsrf = r.hidden("csrf");
    let r = provider.post("/agreements/pks-usul-konsol/approve", &[("csrf", &pcsrf)]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("name=\"confirm\" value=\"yes\""));
    assert_eq!(status_of(&demo, "pks-usul-konsol"), "proposed");
    let r = provider.post(
        "/agreements/pks-usul-konsol/approve",
        &[("csrf", &pcsrf), ("confirm", "yes")],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(status_of(&demo, "pks-usul-konsol"), "provider_approved");
    // any agency may propose, as the consumer; no agency reads the log
    assert_eq!(provider.get("/propose").status, 200);
    assert_eq!(provider.get("/exchanges").status, 403);

    // the consumer revokes, with its reason, after the confirmation step
    let r = consumer.post("/agreements/pks-usul-konsol/revoke", &[("csrf", &csrf)]);
    assert_eq!(r.status, 200);
    let r = consumer.post(
        "/agreements/pks-usul-konsol/revoke",
        &[
            ("csrf", &csrf),
            ("confirm", "yes"),
            ("reason", "program selesai"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(status_of(&demo, "pks-usul-konsol"), "revoked");

    // each step is on the log, by the agency's certificate
    let out = jembatan()
        .args(["audit", "query", "--store"])
        .arg(demo.keep.join("broker.db"))
        .output()
        .unwrap();
    let steps: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["entry"]["agreement_id"] == "pks-usul-konsol")
        .map(|e| {
            (
                e["entry"]["caller"].as_str().unwrap().to_owned(),
                e["entry"]["operation"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("agency:dinkes".to_owned(), "agreement.propose".to_owned()),
            (
                "agency:disdukcapil".to_owned(),
                "agreement.approve".to_owned()
            ),
            ("agency:dinkes".to_owned(), "agreement.revoke".to_owned()),
        ]
    );
}
