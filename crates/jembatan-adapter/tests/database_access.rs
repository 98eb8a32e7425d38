//! How the adapter reaches its database: verified TLS to PostgreSQL and
//! MariaDB (with the CA of `[database_tls]`), another CA refused, plaintext to a host
//! off this machine refused by config validation; and a least-privilege
//! (SELECT-only) role that `adapter init` and the whitelist check serve
//! well: keys found, unreadable tables and columns named as such.

mod common;

use common::{Kind, TestDb};
use jembatan_adapter::{Adapter, AdapterConfig, introspect};
use sqlx::{AssertSqlSafe, Executor};

fn config_text(database: &str, database_tls: &str, datasets: &str) -> String {
    format!(
        r#"
version = 1
agency = "disdukcapil"
database = "{database}"
listen = "127.0.0.1:0"
receipt_log = "receipts.jsonl"

{database_tls}

[tls]
ca = "ca.pem"
cert = "adapter.pem"
key = "adapter-key.pem"

{datasets}
"#
    )
}

#[test]
fn plaintext_to_a_database_off_this_machine_is_refused_by_the_config() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "postgres://siak@db.dukcapil.go.id/siak?sslmode=disable",
        "postgres://siak@db.dukcapil.go.id/siak",
        "mysql://siak:secret@db.dukcapil.go.id/siak?ssl-mode=DISABLED",
        "mysql://siak@db.dukcapil.go.id/siak?ssl-mode=REQUIRED",
    ] {
        let err = AdapterConfig::from_toml(&config_text(url, "", ""), dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"db.dukcapil.go.id\""), "{url}: {err}");
        assert!(err.contains("allow_plaintext"), "{url}: {err}");
        assert!(!err.contains("secret"), "{url}: {err}");
    }
    // accepted: verified TLS, loopback, or said so explicitly
    for (url, tls) in [
        (
            "postgres://siak@db.dukcapil.go.id/siak?sslmode=verify-full",
            "",
        ),
        (
            "mysql://siak@db.dukcapil.go.id/siak?ssl-mode=VERIFY_IDENTITY",
            "",
        ),
        ("postgres://siak@127.0.0.1/siak?sslmode=disable", ""),
        (
            "postgres://siak@db.dukcapil.go.id/siak?sslmode=disable",
            "[database_tls]\nallow_plaintext = true",
        ),
    ] {
        let config = AdapterConfig::from_toml(&config_text(url, tls, ""), dir.path());
        assert!(config.is_ok(), "{url}: {config:?}");
    }
    // a relative CA path is resolved against the config's directory
    let config = AdapterConfig::from_toml(
        &config_text(
            "postgres://siak@db.dukcapil.go.id/siak?sslmode=verify-full",
            "[database_tls]\nca = \"db-ca.pem\"",
            "",
        ),
        dir.path(),
    )
    .unwrap();
    assert_eq!(config.database_tls.ca, Some(dir.path().join("db-ca.pem")));
}

#[tokio::test]
async fn postgres_over_verified_tls_and_another_ca_refused() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    let Ok(ca) = std::env::var("JEMBATAN_TEST_POSTGRES_TLS_CA") else {
        println!(
            "skipped: no PostgreSQL TLS CA (set JEMBATAN_TEST_POSTGRES_TLS_CA; .ci/postgres-tls prints it)"
        );
        db.drop_namespace().await;
        return;
    };
    db.exec("CREATE TABLE penduduk (nik varchar(16) PRIMARY KEY, nama text NOT NULL);\nINSERT INTO penduduk VALUES ('1507000000000001', 'Siti')")
        .await;
    let url = format!("{}&sslmode=verify-full", db.url);
    let datasets = "[[datasets]]\nname = \"penduduk\"\ntable = \"penduduk\"\nkey = \"nik\"\ncolumns = [\"nik\", \"nama\"]";
    let good = config_text(&url, &format!("[database_tls]\nca = {ca:?}"), datasets);
    let config = AdapterConfig::from_toml(&good, db.dir.path()).unwrap();
    let adapter = std::sync::Arc::new(Adapter::connect(&config).await.expect("TLS connect"));
    let records =
        common::records(&adapter, common::fetch("penduduk", &["nik", "nama"], None)).await;
    assert_eq!(records.len(), 1);

    // the server's certificate does not chain to another CA
    let other = tempfile::tempdir().unwrap();
    let other_ca = jembatan_pki::Ca::create(other.path(), "another CA").unwrap();
    let wrong_path = jembatan_pki::Ca::cert_path(other_ca.dir());
    let wrong = config_text(
        &url,
        &format!("[database_tls]\nca = {wrong_path:?}"),
        datasets,
    );
    let config = AdapterConfig::from_toml(&wrong, db.dir.path()).unwrap();
    let err = Adapter::connect(&config).await.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    db.drop_namespace().await;
}

#[tokio::test]
async fn mariadb_over_verified_tls_and_another_ca_refused() {
    let (Ok(admin_url), Ok(ca)) = (
        std::env::var("JEMBATAN_TEST_MYSQL_TLS_URL"),
        std::env::var("JEMBATAN_TEST_MYSQL_TLS_CA"),
    ) else {
        println!(
            "skipped: no MariaDB with TLS (set JEMBATAN_TEST_MYSQL_TLS_URL and \
             JEMBATAN_TEST_MYSQL_TLS_CA; .ci/mariadb-tls starts one and prints the CA)"
        );
        return;
    };
    let name = format!("jembatan_tls_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::MySqlPool::connect(&admin_url).await.unwrap();
    admin
        .execute(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .unwrap();
    admin
        .execute(AssertSqlSafe(format!(
            "CREATE TABLE {name}.penduduk (nik varchar(16) PRIMARY KEY, nama text NOT NULL)"
        )))
        .await
        .unwrap();
    admin
        .execute(AssertSqlSafe(format!(
            "INSERT INTO {name}.penduduk VALUES ('1507000000000001', 'Siti')"
        )))
        .await
        .unwrap();
    let (server, _) = admin_url.rsplit_once('/').unwrap();
    let url = format!("{server}/{name}?ssl-mode=VERIFY_IDENTITY");
    let dir = tempfile::tempdir().unwrap();
    let datasets = "[[datasets]]\nname = \"penduduk\"\ntable = \"penduduk\"\nkey = \"nik\"\ncolumns = [\"nik\", \"nama\"]";
    let good = config_text(&url, &format!("[database_tls]\nca = {ca:?}"), datasets);
    let config = AdapterConfig::from_toml(&good, dir.path()).unwrap();
    let adapter = std::sync::Arc::new(Adapter::connect(&config).await.expect("TLS connect"));
    let records =
        common::records(&adapter, common::fetch("penduduk", &["nik", "nama"], None)).await;
    assert_eq!(records.len(), 1);
    // the same connection with another CA fails: the certificate is checked
    let other = tempfile::tempdir().unwrap();
    let other_ca = jembatan_pki::Ca::create(other.path(), "another CA").unwrap();
    let wrong_path = jembatan_pki::Ca::cert_path(other_ca.dir());
    let wrong = config_text(
        &url,
        &format!("[database_tls]\nca = {wrong_path:?}"),
        datasets,
    );
    let config = AdapterConfig::from_toml(&wrong, dir.path()).unwrap();
    let err = Adapter::connect(&config).await.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    admin
        .execute(AssertSqlSafe(format!("DROP DATABASE {name}")))
        .await
        .unwrap();
}

/// Runs admin statements when the test ends, however it ends: the
/// SELECT-only role or user is dropped even when an assertion fails.
struct Cleanup {
    kind: Kind,
    statements: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (kind, statements) = (self.kind, std::mem::take(&mut self.statements));
        // a runtime of its own: this runs inside the test's runtime
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                match kind {
                    Kind::Postgres => {
                        let url = std::env::var("JEMBATAN_TEST_POSTGRES_URL").unwrap();
                        let admin = sqlx::PgPool::connect(&url).await.unwrap();
                        for sql in statements {
                            admin.execute(AssertSqlSafe(sql)).await.unwrap();
                        }
                    }
                    _ => {
                        let url = std::env::var("JEMBATAN_TEST_MYSQL_URL").unwrap();
                        let admin = sqlx::MySqlPool::connect(&url).await.unwrap();
                        for sql in statements {
                            admin.execute(AssertSqlSafe(sql)).await.unwrap();
                        }
                    }
                }
            })
        })
        .join();
        if done.is_err() && !std::thread::panicking() {
            panic!("cleaning up the test role failed");
        }
    }
}

/// The URL of `url` with `user` instead of its user (no password: the
/// test servers trust loopback).
fn as_user(url: &str, user: &str) -> String {
    let scheme_end = url.find("://").unwrap() + 3;
    let rest = &url[scheme_end..];
    let host_start = rest.find('@').map(|i| i + 1).unwrap_or(0);
    format!("{}{user}@{}", &url[..scheme_end], &rest[host_start..])
}

const LEAST_PRIVILEGE_TABLES: &str = "\
CREATE TABLE penduduk (nik varchar(16) PRIMARY KEY, nama text NOT NULL);
CREATE TABLE rahasia (id integer PRIMARY KEY, catatan text);
CREATE TABLE sebagian (id integer PRIMARY KEY, a text, b text)";

/// A whitelist naming a readable table, an unreadable one and an
/// unreadable column.
const LEAST_PRIVILEGE_DATASETS: &str = r#"
[[datasets]]
name = "penduduk"
table = "penduduk"
key = "nik"
columns = ["nik", "nama"]

[[datasets]]
name = "rahasia"
table = "rahasia"
columns = ["id"]

[[datasets]]
name = "sebagian"
table = "sebagian"
columns = ["id", "a", "b"]
"#;

#[tokio::test]
async fn a_select_only_postgres_role_finds_keys_and_is_told_what_it_cannot_read() {
    let Some(db) = TestDb::new(Kind::Postgres).await else {
        return;
    };
    db.exec(LEAST_PRIVILEGE_TABLES).await;
    let role = format!("jembatan_ro_{}", uuid::Uuid::new_v4().simple());
    let schema = db
        .url
        .rsplit_once("search_path%3D")
        .map(|(_, s)| s.to_owned())
        .unwrap();
    let _cleanup = Cleanup {
        kind: Kind::Postgres,
        statements: vec![
            format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
            format!("DROP OWNED BY {role}"),
            format!("DROP ROLE {role}"),
        ],
    };
    db.exec(&format!(
        "CREATE ROLE {role} LOGIN;\n\
         GRANT USAGE ON SCHEMA {schema} TO {role};\n\
         GRANT SELECT ON penduduk TO {role};\n\
         GRANT SELECT (id, a) ON sebagian TO {role}"
    ))
    .await;
    let url = as_user(&db.url, &role);

    let text = introspect(&url)
        .await
        .expect("introspect as the SELECT-only role");
    let block = text
        .split("# --- table ")
        .find(|b| b.starts_with("penduduk "))
        .unwrap_or_else(|| panic!("penduduk missing:\n{text}"));
    assert!(block.contains("# key = \"nik\""), "key missed:\n{block}");
    let hidden = text
        .split("Tables this database role cannot read")
        .nth(1)
        .unwrap_or_else(|| panic!("no list of unreadable tables:\n{text}"));
    assert!(
        hidden.contains(&format!("#   {schema}.rahasia\n")) || hidden.contains("#   rahasia\n"),
        "{hidden}"
    );

    let config = AdapterConfig::from_toml(
        &config_text(&url, "", LEAST_PRIVILEGE_DATASETS),
        db.dir.path(),
    )
    .unwrap();
    let err = Adapter::connect(&config).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "dataset rahasia: table \"rahasia\" exists but cannot be read: database role \"{role}\" has no SELECT privilege on it"
        )),
        "{err}"
    );
    assert!(
        err.contains("dataset sebagian: column \"b\" of table \"sebagian\" cannot be read"),
        "{err}"
    );
    assert!(!err.contains("dataset penduduk"), "{err}");

    db.drop_namespace().await;
}

#[tokio::test]
async fn a_select_only_mariadb_user_finds_keys_and_is_told_what_may_be_unreadable() {
    let Some(db) = TestDb::new(Kind::MySql).await else {
        return;
    };
    db.exec(LEAST_PRIVILEGE_TABLES).await;
    let user = format!("jro_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let database = db
        .url
        .rsplit_once('/')
        .unwrap()
        .1
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let _cleanup = Cleanup {
        kind: Kind::MySql,
        statements: vec![format!("DROP USER IF EXISTS '{user}'@'%'")],
    };
    db.exec(&format!(
        "CREATE USER '{user}'@'%';\n\
         GRANT SELECT ON {database}.penduduk TO '{user}'@'%';\n\
         GRANT SELECT (id, a) ON {database}.sebagian TO '{user}'@'%'"
    ))
    .await;
    let url = as_user(&db.url, &user);

    let text = introspect(&url)
        .await
        .expect("introspect as the SELECT-only user");
    let block = text
        .split("# --- table ")
        .find(|b| b.starts_with("penduduk "))
        .unwrap_or_else(|| panic!("penduduk missing:\n{text}"));
    assert!(block.contains("# key = \"nik\""), "key missed:\n{block}");
    assert!(!text.contains("# --- table rahasia"), "{text}");
    assert!(
        text.contains("a table missing above may exist and need a GRANT SELECT"),
        "{text}"
    );

    let config = AdapterConfig::from_toml(
        &config_text(&url, "", LEAST_PRIVILEGE_DATASETS),
        db.dir.path(),
    )
    .unwrap();
    let err = Adapter::connect(&config).await.unwrap_err().to_string();
    assert!(
        err.contains(
            "dataset rahasia: no table \"rahasia\", or this database user has no SELECT privilege on it"
        ),
        "{err}"
    );
    assert!(
        err.contains("dataset sebagian: table \"sebagian\" has no column \"b\""),
        "{err}"
    );
    assert!(!err.contains("dataset penduduk"), "{err}");

    db.drop_namespace().await;
}
