//! TLS to a PostgreSQL store: verified against the CA given in the
//! config, refused with another CA, and plaintext to a host off this
//! machine refused before any connection. Needs `JEMBATAN_TEST_POSTGRES_URL`
//! and, for the connections, `JEMBATAN_TEST_POSTGRES_TLS_CA` (the CA of the
//! server's certificate, as `.ci/postgres-tls` prints it).

use jembatan_core::dbtls::DatabaseTls;
use jembatan_store::{Store, StoreError};

fn replace_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

#[test]
fn plaintext_to_a_host_off_this_machine_is_refused_without_connecting() {
    let strict = DatabaseTls::default();
    // (url, refused)
    let cases = [
        (
            "postgres://jembatan@db.dukcapil.go.id/store?sslmode=disable",
            true,
        ),
        ("postgres://jembatan@db.dukcapil.go.id/store", true),
        (
            "postgres://jembatan@db.dukcapil.go.id/store?sslmode=require",
            true,
        ),
        (
            "postgres://jembatan@db.dukcapil.go.id/store?sslmode=verify-full",
            false,
        ),
        ("postgres://jembatan@127.0.0.1/store?sslmode=disable", false),
        ("postgres://jembatan@localhost/store?sslmode=disable", false),
        ("postgres://jembatan@[::1]/store?sslmode=disable", false),
        (
            "postgres:///store?host=/run/postgresql&sslmode=disable",
            false,
        ),
        ("broker.db", false),
    ];
    for (url, refused) in cases {
        let result = jembatan_store::check_url(url, &strict);
        assert_eq!(result.is_err(), refused, "{url}: {result:?}");
        if let Err(e) = result {
            assert!(matches!(e, StoreError::Transport(_)), "{url}: {e}");
            let message = e.to_string();
            assert!(message.contains("\"db.dukcapil.go.id\""), "{message}");
            assert!(message.contains("allow_plaintext"), "{message}");
        }
    }
    let lax = DatabaseTls {
        ca: None,
        allow_plaintext: true,
    };
    jembatan_store::check_url(
        "postgres://jembatan@db.dukcapil.go.id/store?sslmode=disable",
        &lax,
    )
    .unwrap();
}

#[tokio::test]
async fn the_store_connects_with_verified_tls_and_refuses_another_ca() {
    let Ok(url) = std::env::var("JEMBATAN_TEST_POSTGRES_URL") else {
        println!("skipped: no PostgreSQL (set JEMBATAN_TEST_POSTGRES_URL)");
        return;
    };
    let Ok(ca) = std::env::var("JEMBATAN_TEST_POSTGRES_TLS_CA") else {
        println!(
            "skipped: no PostgreSQL TLS CA (set JEMBATAN_TEST_POSTGRES_TLS_CA; .ci/postgres-tls prints it)"
        );
        return;
    };
    let admin = Store::admin_pool(&url).await.unwrap();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("jembatan_tls_{}_{nanos}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    let base = replace_db(&url, &name);
    let sep = if base.contains('?') { '&' } else { '?' };
    let verified = format!("{base}{sep}sslmode=verify-full");
    let tls = DatabaseTls {
        ca: Some(ca.into()),
        allow_plaintext: false,
    };

    let store = Store::connect_with(&verified, &tls).await.unwrap();
    store
        .upsert_agency(&jembatan_store::Agency {
            id: "dinsos".parse().unwrap(),
            name: "Dinas Sosial".into(),
            adapter_endpoints: Vec::new(),
        })
        .await
        .unwrap();
    // every connection the store holds to its database is TLS
    let (tls_connections, plain): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FILTER (WHERE s.ssl), COUNT(*) FILTER (WHERE NOT s.ssl) \
         FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid \
         WHERE a.datname = '{name}'"
    )))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(tls_connections > 0, "no TLS connection to {name}");
    assert_eq!(plain, 0, "plaintext connections to {name}");
    drop(store);

    // a certificate from another CA is refused
    let dir = tempfile::tempdir().unwrap();
    let other = jembatan_pki::Ca::create(dir.path(), "another CA").unwrap();
    let wrong = DatabaseTls {
        ca: Some(jembatan_pki::Ca::cert_path(other.dir())),
        allow_plaintext: false,
    };
    let err = Store::connect_with(&verified, &wrong).await.unwrap_err();
    let message = format!("{err}");
    assert!(
        message.to_lowercase().contains("certificate") || message.contains("UnknownIssuer"),
        "{message}"
    );
    // the CA named twice is a config error
    let twice = format!("{verified}&sslrootcert=/etc/ssl/certs/ca.pem");
    let err = Store::connect_with(&twice, &tls).await.unwrap_err();
    assert!(matches!(err, StoreError::TlsConfig(_)), "{err}");

    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .unwrap();
}
