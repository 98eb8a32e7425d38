//! The console in a real headless Chromium, driven through chromedriver
//! (WebDriver): log in with the token, find a denied exchange, check its
//! proof in the browser and see a tampered proof fail, look a NIK up,
//! switch the language, approve an agreement as an operator; labels,
//! heading order, keyboard focus and a 375 px wide screen checked on every
//! page. Screenshots go to `$CARGO_TARGET_TMPDIR/console-browser/`.
//! Without chromium and chromedriver the test says "skipped: no chromium".

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use support::{Demo, Running, http_json, wait_for_port};

const PASSWORD: &str = "kata sandi inspektorat";
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn found(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// One WebDriver session.
struct Browser {
    port: u16,
    session: String,
    shots: PathBuf,
}

impl Browser {
    fn open(port: u16, chromium: &Path, shots: &Path) -> Browser {
        let options = json!({
            "binary": chromium.to_str().unwrap(),
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"]
        });
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}});
        let r = http_json(port, "POST", "/session", Some(&caps));
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_owned();
        Browser {
            port,
            session,
            shots: shots.to_owned(),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = http_json(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body.as_ref(),
        );
        if r["value"].get("error").is_some() {
            panic!("{method} {path}: {}", r["value"]);
        }
        r["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_owned()
    }

    fn click(&self, css: &str) {
        let el = self.find(css);
        self.call("POST", &format!("/element/{el}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.call(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn js(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    fn text(&self, css: &str) -> String {
        let el = self.find(css);
        self.call("GET", &format!("/element/{el}/text"), None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn wait_for(&self, script: &str, what: &str) -> Value {
        let started = Instant::now();
        loop {
            let v = self.js(script);
            if !v.is_null() && v != json!(false) && v != json!("") {
                return v;
            }
            if started.elapsed() > Duration::from_secs(30) {
                self.screenshot("failure");
                let page = self.js("return location.href + ' ' + document.body.innerText");
                panic!(
                    "waited for {what}; the page is {}",
                    page.as_str().unwrap_or("")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn screenshot(&self, name: &str) {
        // no focus ring left over from the keyboard check
        self.js("document.activeElement && document.activeElement.blur()");
        let png = self.call("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), bytes).unwrap();
    }

    /// Labels on every form field, one h1 and no skipped heading level,
    /// a skip link first in the tab order, the page's language set.
    fn check_accessibility(&self, page: &str) {
        let faults = self.js(
            r#"const faults = [];
            for (const f of document.querySelectorAll("input, select, textarea")) {
              if (f.type === "hidden") continue;
              const labelled = (f.id && document.querySelector(`label[for="${f.id}"]`)) || f.getAttribute("aria-label") || f.closest("label");
              if (!labelled) faults.push("no label: " + (f.name || f.id));
            }
            const levels = [...document.querySelectorAll("h1, h2, h3, h4, h5, h6")].map(h => Number(h.tagName[1]));
            if (levels.filter(l => l === 1).length !== 1) faults.push("h1 count " + levels.filter(l => l === 1).length);
            if (levels[0] !== 1) faults.push("first heading is h" + levels[0]);
            for (let i = 1; i < levels.length; i++) if (levels[i] > levels[i - 1] + 1) faults.push("h" + levels[i - 1] + " then h" + levels[i]);
            if (!document.documentElement.lang) faults.push("no lang");
            for (const b of document.querySelectorAll("button")) if (!b.textContent.trim() && !b.getAttribute("aria-label")) faults.push("button without text");
            return faults;"#,
        );
        assert_eq!(faults, json!([]), "{page}: accessibility faults");
        // the keyboard reaches the skip link first
        self.js("document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0);");
        let body = self.find("body");
        self.call(
            "POST",
            &format!("/element/{body}/value"),
            Some(json!({"text": "\u{E004}"})),
        );
        let first = self.js("return document.activeElement.className");
        assert_eq!(
            first,
            json!("skip"),
            "{page}: Tab reaches the skip link first"
        );
    }

    /// Whether the page fits its viewport without sideways scrolling.
    fn check_fits(&self, page: &str) {
        let (scroll, width) = (
            self.js("return document.documentElement.scrollWidth"),
            self.js("return window.innerWidth"),
        );
        assert!(
            scroll.as_u64() <= width.as_u64(),
            "{page}: {scroll} px wide in a {width} px window"
        );
    }

    fn close(self) {
        let _ = http_json(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

#[test]
fn the_console_in_a_headless_chromium() {
    let (Some(chromium), Some(driver)) = (
        found("chromium").or_else(|| found("chromium-browser")),
        found("chromedriver"),
    ) else {
        println!("skipped: no chromium");
        return;
    };
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-browser");
    std::fs::create_dir_all(&shots).unwrap();

    let demo = Demo::start();
    demo.agreement_awaiting_an_operator("pks-uji-peramban");
    // a user with a password besides the token
    let hash = {
        use std::io::Write;
        let mut child = support::jembatan()
            .args(["console", "hash-password"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let config = demo.keep.join("console.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{text}\n[[users]]\nname = \"inspektorat\"\npassword_hash = \"{hash}\"\n"),
    )
    .unwrap();
    let auditor = demo.console("console.toml", &demo.dir.path().join("auditor.log"));
    let operator = demo.console(
        "console-operator.toml",
        &demo.dir.path().join("operator.log"),
    );
    // the consuming agency's own console, to propose
    let text = std::fs::read_to_string(demo.keep.join("console-operator.toml")).unwrap();
    std::fs::write(
        demo.keep.join("console-dinkes.toml"),
        text.replace("certs/operator", "certs/agency-dinkes"),
    )
    .unwrap();
    let agency = demo.console("console-dinkes.toml", &demo.dir.path().join("dinkes.log"));

    let driver_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _driver = Running(
        Command::new(driver)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(driver_port, "chromedriver");
    let b = Browser::open(driver_port, &chromium, &shots);
    let base = format!("http://127.0.0.1:{}", auditor.port);

    // log in with the token
    b.go(&format!("{base}/"));
    assert!(b.js("return location.pathname").as_str() == Some("/login"));
    b.check_accessibility("login");
    b.screenshot("01-login");
    b.type_into("#token", &auditor.token);
    b.click("form:has(#token) button[type=submit]");
    b.wait_for(
        "return location.pathname === '/' && document.querySelector('svg.chart')",
        "the overview",
    );
    b.check_accessibility("overview");
    // the latest signed checkpoint with its age
    let signed =
        b.js("return document.querySelector('#checkpoint-age time').getAttribute('datetime')");
    assert!(
        signed
            .as_str()
            .is_some_and(|t| t.starts_with("20") && t.ends_with('Z')),
        "the checkpoint's signing time: {signed}"
    );
    b.screenshot("02-overview");
    let weight = b.js(
        r#"const nav = performance.getEntriesByType("navigation")[0];
        const res = performance.getEntriesByType("resource");
        const paint = performance.getEntriesByType("paint").find(p => p.name === "first-contentful-paint");
        return {bytes: nav.encodedBodySize + res.reduce((n, r) => n + r.encodedBodySize, 0),
                first_paint_ms: paint ? Math.round(paint.startTime) : null};"#,
    );
    println!("overview: {weight}");

    // find a denied exchange with the filter form
    b.click("nav a[href='/exchanges']");
    b.wait_for(
        "return document.querySelector('#f-decision')",
        "the exchanges page",
    );
    b.click("#f-decision option[value=deny]");
    b.click(".filters button[type=submit]");
    b.wait_for(
        "return location.search.includes('decision=deny') && document.querySelector('.entry.deny')",
        "denied entries",
    );
    b.check_accessibility("exchanges");
    b.screenshot("03-exchanges-denied");

    // its entry, and the proof checked in the browser
    b.click(".entry.deny a.seq");
    b.wait_for(
        "return document.querySelector('#proof-fetch')",
        "the entry page",
    );
    let seq = b
        .js("return location.pathname.split('/')[2]")
        .as_str()
        .unwrap()
        .to_owned();
    b.check_accessibility("entry");
    let weight = b.js(
        r#"const nav = performance.getEntriesByType("navigation")[0];
        const res = performance.getEntriesByType("resource");
        const paint = performance.getEntriesByType("paint").find(p => p.name === "first-contentful-paint");
        return {bytes: nav.encodedBodySize + res.reduce((n, r) => n + r.encodedBodySize, 0),
                first_paint_ms: paint ? Math.round(paint.startTime) : null};"#,
    );
    println!("entry: {weight}");
    b.click("#proof-fetch");
    let verdict = b.wait_for(
        "const r = document.querySelector('#proof-result'); return (r.classList.contains('pass') || r.classList.contains('fail')) && r.className + ' ' + r.textContent",
        "the proof check",
    );
    let verdict = verdict.as_str().unwrap().to_owned();
    assert!(verdict.contains("pass"), "{verdict}");
    let steps = b.js("return document.querySelectorAll('#proof-path li').length");
    assert!(
        steps.as_u64().unwrap() >= 3,
        "leaf, steps and root are shown"
    );
    println!("proof: {verdict}");
    b.screenshot("04-proof-passes");

    // tamper with the proof: one hash digit changed
    b.js(r#"const t = document.querySelector('#proof-json');
        const p = JSON.parse(t.value);
        const h = p.hashes[0];
        p.hashes[0] = (h[0] === '0' ? '1' : '0') + h.slice(1);
        t.value = JSON.stringify(p, null, 2);"#);
    b.click("#proof-check");
    let verdict = b.wait_for(
        "const r = document.querySelector('#proof-result'); return (r.classList.contains('pass') || r.classList.contains('fail')) && r.className",
        "the tampered proof check",
    );
    assert!(verdict.as_str().unwrap().contains("fail"), "{verdict}");
    b.screenshot("05-proof-tampered-fails");
    // and a changed entry fails too
    b.click("#proof-fetch");
    b.wait_for(
        "return document.querySelector('#proof-result').classList.contains('pass')",
        "the proof again",
    );
    b.js(r#"const t = document.querySelector('#proof-json');
        const p = JSON.parse(t.value);
        const entry = atob(p.canonical_base64).replace('"deny"', '"allow"');
        p.canonical_base64 = btoa(entry);
        t.value = JSON.stringify(p);"#);
    b.click("#proof-check");
    b.wait_for(
        "return document.querySelector('#proof-result').classList.contains('fail')",
        "the changed entry refused",
    );

    // who accessed this person
    b.click("nav a[href='/who']");
    b.wait_for("return document.querySelector('#who-key')", "the who page");
    b.check_accessibility("who");
    b.type_into("#who-key", &demo.nik);
    b.click("form[action='/who'] button[type=submit]");
    b.wait_for(
        "return document.querySelector('.entries .entry')",
        "who accessed",
    );
    assert_eq!(
        b.js("return location.pathname + location.search"),
        json!("/who"),
        "the NIK is not in the URL"
    );
    let page = b
        .js("return document.body.innerText")
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!page.contains(&demo.nik), "the NIK is not shown back");
    b.check_accessibility("who results");
    b.screenshot("06-who-accessed");

    // verify the whole log, with a progress bar
    b.click("nav a[href='/verify']");
    b.click("#verify-start");
    let result = b.wait_for(
        "const r = document.querySelector('#verify-result'); return r && r.className",
        "the verification",
    );
    assert_eq!(result, json!("ok"));
    b.check_accessibility("verify");
    b.screenshot("06a-verify");

    // the registry
    b.click("nav a[href='/registry']");
    b.click("a[href='/registry/disdukcapil.penduduk']");
    b.wait_for(
        "return document.querySelector('#schema')",
        "the dataset page",
    );
    b.check_accessibility("dataset");
    b.screenshot("06b-registry-dataset");
    // the mappings reading or producing its records, each document shown
    b.click("ul.mappings summary");
    assert!(
        b.text("ul.mappings").contains("dinsos.warga@"),
        "{}",
        b.text("ul.mappings")
    );
    b.wait_for(
        "return document.querySelector('ul.mappings details').open",
        "the mapping document",
    );
    b.screenshot("06c-registry-mapping");

    // switch the language
    let before = b.js("return document.documentElement.lang");
    b.click("#lang-switch");
    b.wait_for(
        &format!("return document.documentElement.lang !== {before}"),
        "the other language",
    );
    b.screenshot("07-language-switched");

    // the operator approves the agreement waiting for it
    let op_base = format!("http://127.0.0.1:{}", operator.port);
    b.go(&format!("{op_base}/login"));
    b.type_into("#token", &operator.token);
    b.click("form:has(#token) button[type=submit]");
    b.wait_for(
        "return location.pathname === '/'",
        "the operator's overview",
    );
    // the auditor sees an agreement's quota use and its history
    b.go(&format!("{base}/agreements"));
    b.check_accessibility("agreements (auditor)");
    b.click("a[href='/agreements/pks-uji-peramban']");
    b.wait_for(
        "return document.querySelector('#quota-use')",
        "the quota use",
    );
    b.screenshot("07a-agreement-quota");
    b.go(&format!("{op_base}/agreements"));
    b.check_accessibility("agreements");
    b.screenshot("08-agreements");
    b.click("a[href='/agreements/pks-uji-peramban']");
    b.wait_for(
        "return document.querySelector('#approve')",
        "the approve button",
    );
    b.check_accessibility("agreement");
    b.click("#approve");
    b.wait_for(
        "return document.querySelector('#confirm')",
        "the confirmation step",
    );
    b.check_accessibility("confirm");
    b.screenshot("09-confirm-approval");
    b.click("#confirm");
    b.wait_for("return document.querySelector('p.ok')", "the approval done");
    assert!(b.text(".fields .badge").len() > 3);
    assert_eq!(
        b.js("return document.querySelector('.fields .badge').className"),
        json!("badge approved")
    );
    b.screenshot("10-approved");

    // the consuming agency proposes from its own console, after a look
    // at the terms
    let agency_base = format!("http://127.0.0.1:{}", agency.port);
    b.go(&format!("{agency_base}/login"));
    b.type_into("#token", &agency.token);
    b.click("form:has(#token) button[type=submit]");
    b.wait_for("return location.pathname === '/'", "the agency's overview");
    b.click("nav a[href='/propose']");
    b.wait_for(
        "return document.querySelector('#fields')",
        "the proposal form",
    );
    b.check_accessibility("propose");
    b.click("#dataset option[value='disdukcapil.penduduk']");
    b.type_into("#purpose", "pendataan sasaran imunisasi");
    b.type_into("#fields", "nik\nkode_desa");
    b.type_into("#id", "pks-usul-peramban");
    b.screenshot("10a-propose");
    b.click("#propose");
    b.wait_for(
        "return document.querySelector('#confirm')",
        "the terms to confirm",
    );
    b.check_accessibility("propose (confirm)");
    b.screenshot("10b-confirm-proposal");
    b.click("#confirm");
    b.wait_for(
        "return location.pathname === '/agreements/pks-usul-peramban' && document.querySelector('p.ok')",
        "the proposal done",
    );
    assert_eq!(
        b.js("return document.querySelector('.fields .badge').className"),
        json!("badge proposed")
    );

    // a 375 px wide phone: every page fits without sideways scrolling;
    // the auditor logs in again, with a password this time
    b.call(
        "POST",
        "/goog/cdp/execute",
        Some(json!({"cmd": "Emulation.setDeviceMetricsOverride",
            "params": {"width": 375, "height": 812, "deviceScaleFactor": 1, "mobile": true}})),
    );
    b.go(&format!("{base}/login"));
    assert_eq!(b.js("return window.innerWidth"), json!(375));
    b.check_fits("login");
    b.type_into("#name", "inspektorat");
    b.type_into("#password", PASSWORD);
    b.click("form:has(#password) button[type=submit]");
    b.wait_for(
        "return location.pathname === '/' && document.querySelector('svg.chart')",
        "the overview by password",
    );
    b.check_fits("overview");
    b.screenshot("11-phone-overview");
    for (path, name) in [
        ("/exchanges?decision=deny".to_owned(), "exchanges"),
        (format!("/entries/{seq}"), "entry"),
        ("/who".to_owned(), "who"),
        ("/agreements".to_owned(), "agreements"),
        ("/agreements/pks-uji-peramban".to_owned(), "agreement"),
        ("/registry/disdukcapil.penduduk".to_owned(), "dataset"),
    ] {
        b.go(&format!("{base}{path}"));
        b.wait_for(
            "return document.readyState === 'complete' && document.querySelector('h1')",
            name,
        );
        b.check_fits(name);
        b.screenshot(&format!("12-phone-{name}"));
    }
    b.close();
}
