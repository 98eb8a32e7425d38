//! Tests of the generated databases: NIK structure, references, determinism, no overwriting.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};

use super::*;

const SMALL: DataOptions = DataOptions {
    seed: 7,
    residents: 2_000,
};

async fn open(db: &AgencyDatabase) -> SqliteConnection {
    SqliteConnectOptions::new()
        .filename(&db.path)
        .read_only(true)
        .connect()
        .await
        .expect("open generated database")
}

async fn strings(conn: &mut SqliteConnection, sql: &'static str) -> Vec<Option<String>> {
    sqlx::query(sql)
        .fetch_all(conn)
        .await
        .expect(sql)
        .iter()
        .map(|r| r.get::<Option<String>, _>(0))
        .collect()
}

/// Every row of every table as text, in primary-key order.
async fn dump(dbs: &[AgencyDatabase]) -> Vec<String> {
    let mut out = Vec::new();
    for db in dbs {
        let mut conn = open(db).await;
        for t in &db.tables {
            let sql = format!("SELECT * FROM {} ORDER BY 1", t.name);
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut conn)
                .await
                .expect("select");
            for row in rows {
                let cells: Vec<String> = (0..row.len())
                    .map(|i| {
                        row.try_get::<Option<i64>, _>(i)
                            .map(|v| format!("{v:?}"))
                            .or_else(|_| {
                                row.try_get::<Option<String>, _>(i)
                                    .map(|v| format!("{v:?}"))
                            })
                            .unwrap_or_else(|e| format!("<{e}>"))
                    })
                    .collect();
                out.push(format!("{}.{}|{}", db.agency, t.name, cells.join("|")));
            }
        }
        conn.close().await.expect("close");
    }
    out
}

#[tokio::test]
async fn same_seed_gives_identical_rows() {
    let a = tempfile::tempdir().expect("tempdir");
    let b = tempfile::tempdir().expect("tempdir");
    let ga = generate_with_examples(a.path(), &SMALL)
        .await
        .expect("generate a");
    let gb = generate_with_examples(b.path(), &SMALL)
        .await
        .expect("generate b");
    assert_eq!(ga.examples, gb.examples);
    let counts = |g: &Generated| -> Vec<(String, Vec<TableInfo>)> {
        g.databases
            .iter()
            .map(|d| (d.agency.clone(), d.tables.clone()))
            .collect()
    };
    assert_eq!(counts(&ga), counts(&gb));
    let (da, db) = (dump(&ga.databases).await, dump(&gb.databases).await);
    assert!(da.len() > 4_000, "rows: {}", da.len());
    assert_eq!(da, db);

    let c = tempfile::tempdir().expect("tempdir");
    let other = DataOptions { seed: 8, ..SMALL };
    let gc = generate(c.path(), &other).await.expect("generate c");
    assert_ne!(da, dump(&gc).await, "another seed gives other data");
}

#[tokio::test]
async fn refuses_to_overwrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let existing = dir.path().join("dinsos.db");
    std::fs::write(&existing, b"precious").expect("write");
    let err = generate(dir.path(), &SMALL).await.expect_err("must refuse");
    assert!(
        matches!(&err, DataError::AlreadyExists { path } if path == &existing),
        "{err}"
    );
    assert!(err.to_string().contains("dinsos.db"), "{err}");
    assert_eq!(std::fs::read(&existing).expect("read"), b"precious");
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("ls").count(),
        1,
        "nothing else created"
    );

    let fresh = tempfile::tempdir().expect("tempdir");
    generate(fresh.path(), &SMALL).await.expect("first run");
    let err = generate(fresh.path(), &SMALL)
        .await
        .expect_err("second run must refuse");
    assert!(matches!(err, DataError::AlreadyExists { .. }));

    let err = generate(
        fresh.path(),
        &DataOptions {
            seed: 1,
            residents: 10,
        },
    )
    .await
    .expect_err("too small");
    assert!(matches!(err, DataError::TooFewResidents { .. }));
}

#[tokio::test]
async fn niks_are_valid_and_references_resolve() {
    let dir = tempfile::tempdir().expect("tempdir");
    let generated = generate_with_examples(dir.path(), &SMALL)
        .await
        .expect("generate");
    let dbs = &generated.databases;
    let ids: Vec<&str> = dbs.iter().map(|d| d.agency.as_str()).collect();
    assert_eq!(ids, AGENCIES.iter().map(|a| a.0).collect::<Vec<_>>());
    for d in dbs {
        assert!(d.url.starts_with("sqlite://"), "{}", d.url);
        assert!(d.path.starts_with(dir.path()));
        assert!(
            d.tables.iter().all(|t| t.rows > 0),
            "{}: {:?}",
            d.agency,
            d.tables
        );
    }
    let db = |id: &str| dbs.iter().find(|d| d.agency == id).expect(id);
    assert_eq!(
        db("disdukcapil").table("penduduk").map(|t| t.rows),
        Some(2_000)
    );

    let wilayah = Wilayah::load().expect("wilayah");
    let village_codes: HashSet<&str> = wilayah.villages().map(|v| v.code.as_str()).collect();

    let mut reg = open(db("disdukcapil")).await;
    let rows = sqlx::query(
        "SELECT nik, no_kk, tgl_lahir, jenis_kelamin, kode_desa, kode_kecamatan, status FROM penduduk",
    )
    .fetch_all(&mut reg)
    .await
    .expect("penduduk");
    let mut niks = HashSet::new();
    let mut statuses: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        let nik: String = r.get(0);
        let no_kk: String = r.get(1);
        let tgl: String = r.get(2);
        let jk: String = r.get(3);
        let desa: String = r.get(4);
        let kec: String = r.get(5);
        *statuses.entry(r.get(6)).or_default() += 1;
        assert_eq!(nik.len(), 16, "{nik}");
        assert!(nik.bytes().all(|b| b.is_ascii_digit()), "{nik}");
        assert!(nik.starts_with("1507"), "{nik}");
        assert_eq!(&nik[4..6], &kec[6..8], "district digits of {nik} vs {kec}");
        assert!(desa.starts_with(&format!("{kec}.")) && village_codes.contains(desa.as_str()));
        let parts = decode_nik(&nik).expect("decodes");
        assert_eq!(parts.female, jk == "P", "{nik} {jk}");
        let date = NaiveDate::parse_from_str(&tgl, "%d-%m-%Y").expect("tgl_lahir is DD-MM-YYYY");
        assert_eq!(u32::from(parts.birth_day), date.day(), "{nik} {tgl}");
        assert_eq!(u32::from(parts.birth_month), date.month(), "{nik} {tgl}");
        assert_eq!(i32::from(parts.birth_yy), date.year() % 100, "{nik} {tgl}");
        assert_eq!(&nik[6..12], nik_birth_field(date, jk == "L"));
        assert!(date <= AS_OF);
        assert_eq!(no_kk.len(), 16);
        assert!(no_kk.starts_with(&format!("1507{}", &kec[6..8])), "{no_kk}");
        let issued = NaiveDate::parse_from_str(&no_kk[6..12], "%d%m%y").expect("no_kk date");
        assert!(issued <= AS_OF);
        assert!(niks.insert(nik), "NIK unique");
    }
    let hidup = statuses.get("HIDUP").copied().unwrap_or(0) as f64 / rows.len() as f64;
    assert!((0.93..=0.995).contains(&hidup), "share alive {hidup}");

    // Households: head in the family, members share the card and village, children younger.
    let kk = sqlx::query(
        "SELECT k.no_kk, k.jumlah_anggota, COUNT(p.nik), COUNT(DISTINCT p.kode_desa),
                SUM(p.nik = k.nik_kepala_keluarga)
         FROM keluarga k JOIN penduduk p ON p.no_kk = k.no_kk GROUP BY k.no_kk",
    )
    .fetch_all(&mut reg)
    .await
    .expect("keluarga");
    assert_eq!(
        kk.iter().map(|r| r.get::<i64, _>(1)).sum::<i64>(),
        2_000,
        "every resident in one family"
    );
    for r in &kk {
        assert_eq!(r.get::<i64, _>(1), r.get::<i64, _>(2));
        assert!((1..=7).contains(&r.get::<i64, _>(1)));
        assert_eq!(r.get::<i64, _>(3), 1, "one village per family");
        assert_eq!(r.get::<i64, _>(4), 1, "head belongs to the family");
    }
    let bad_children: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM penduduk c JOIN penduduk h ON h.no_kk = c.no_kk
         WHERE c.hubungan_keluarga = 'ANAK' AND h.hubungan_keluarga IN ('KEPALA KELUARGA', 'ISTRI')
           AND substr(c.tgl_lahir, 7, 4) || substr(c.tgl_lahir, 4, 2) || substr(c.tgl_lahir, 1, 2)
            <= substr(h.tgl_lahir, 7, 4) || substr(h.tgl_lahir, 4, 2) || substr(h.tgl_lahir, 1, 2)",
    )
    .fetch_one(&mut reg)
    .await
    .expect("ages");
    assert_eq!(bad_children, 0, "children are younger than their parents");
    let muslim: f64 = sqlx::query_scalar("SELECT AVG(agama = 'ISLAM') FROM penduduk")
        .fetch_one(&mut reg)
        .await
        .expect("agama");
    assert!((0.88..=0.99).contains(&muslim), "share ISLAM {muslim}");
    let young: f64 = sqlx::query_scalar(
        "SELECT AVG(CAST(substr(tgl_lahir, 7, 4) AS INTEGER) >= 2006) FROM penduduk",
    )
    .fetch_one(&mut reg)
    .await
    .expect("ages");
    assert!((0.25..=0.5).contains(&young), "share under 20: {young}");
    let living: HashSet<String> =
        strings(&mut reg, "SELECT nik FROM penduduk WHERE status = 'HIDUP'")
            .await
            .into_iter()
            .flatten()
            .collect();
    let cards: HashSet<String> = strings(&mut reg, "SELECT no_kk FROM keluarga")
        .await
        .into_iter()
        .flatten()
        .collect();

    // Foreign NIKs and family cards resolve.
    let checks: [(&str, &'static str, bool); 6] = [
        ("dpmptsp", "SELECT nik_pemilik FROM izin_usaha", true),
        (
            "bpn",
            "SELECT nik_pemilik FROM sertifikat_tanah WHERE nik_pemilik IS NOT NULL",
            false,
        ),
        (
            "diskominfo",
            "SELECT nik_pengirim FROM pengaduan_sms WHERE nik_pengirim IS NOT NULL",
            true,
        ),
        ("dinsos", "SELECT nik FROM penerima_bansos", false),
        ("dinkes", "SELECT nik_pasien FROM kunjungan_faskes", true),
        ("dinsos", "SELECT no_kk FROM penerima_bansos", false),
    ];
    for (agency, sql, must_live) in checks {
        let mut conn = open(db(agency)).await;
        let values = strings(&mut conn, sql).await;
        assert!(!values.is_empty(), "{agency}: {sql}");
        for v in values.into_iter().flatten() {
            let known = if sql.contains("no_kk") {
                cards.contains(&v)
            } else {
                niks.contains(&v)
            };
            assert!(known, "{agency}: {v} not in the registry");
            if must_live {
                assert!(
                    living.contains(&v),
                    "{agency}: {v} is not a living resident"
                );
            }
        }
    }
    let mut bpn = open(db("bpn")).await;
    for code in strings(&mut bpn, "SELECT kode_desa FROM sertifikat_tanah")
        .await
        .into_iter()
        .flatten()
    {
        assert!(village_codes.contains(code.as_str()), "{code}");
    }

    // Tender bidders cite DPMPTSP licences, except a deliberate few.
    let mut lic = open(db("dpmptsp")).await;
    let issued: HashSet<String> = strings(&mut lic, "SELECT nomor_izin FROM izin_usaha")
        .await
        .into_iter()
        .flatten()
        .collect();
    let mut lpse = open(db("lpse")).await;
    let cited = strings(&mut lpse, "SELECT nomor_izin FROM peserta_tender").await;
    let orphans = cited
        .iter()
        .flatten()
        .filter(|n| !issued.contains(*n))
        .count();
    assert!(
        orphans >= 1 && orphans * 10 < cited.len(),
        "orphans {orphans} of {}",
        cited.len()
    );
    let winners: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM tender t WHERE t.status = 'SELESAI'
         AND (SELECT SUM(pemenang) FROM peserta_tender p WHERE p.kode_tender = t.kode_tender) != 1",
    )
    .fetch_one(&mut lpse)
    .await
    .expect("winners");
    assert_eq!(winners, 0, "every finished tender has exactly one winner");

    // Examples point at real rows.
    let ex = &generated.examples;
    assert!(living.contains(&ex.resident_nik));
    assert!(cards.contains(&ex.resident_no_kk));
    assert!(!niks.contains(&ex.unknown_nik) && decode_nik(&ex.unknown_nik).is_some());
    assert!(living.contains(&ex.licence_owner_nik) && issued.contains(&ex.licence_number));
    assert!(issued.contains(&ex.bidder_licence_number));
    assert!(!issued.contains(&ex.unregistered_licence_number));
    assert!(cited.contains(&Some(ex.unregistered_licence_number.clone())));
    assert!(living.contains(&ex.land_owner_nik) && living.contains(&ex.aid_recipient_nik));
    assert!(living.contains(&ex.patient_nik));
    assert!(village_codes.contains(ex.village_code.as_str()));
    let owner: String =
        sqlx::query_scalar("SELECT nik_pemilik FROM izin_usaha WHERE nomor_izin = ?")
            .bind(&ex.licence_number)
            .fetch_one(&mut lic)
            .await
            .expect("licence");
    assert_eq!(owner, ex.licence_owner_nik);
    let land_owner: String =
        sqlx::query_scalar("SELECT nik_pemilik FROM sertifikat_tanah WHERE nomor_sertifikat = ?")
            .bind(&ex.land_certificate_number)
            .fetch_one(&mut bpn)
            .await
            .expect("certificate");
    assert_eq!(land_owner, ex.land_owner_nik);
}

#[test]
fn nik_helpers() {
    let d = NaiveDate::from_ymd_opt(1985, 7, 3).expect("date");
    assert_eq!(nik_birth_field(d, true), "030785");
    assert_eq!(nik_birth_field(d, false), "430785");
    let p = decode_nik("1507034307850012").expect("valid");
    assert_eq!((p.province, p.regency, p.district), (15, 7, 3));
    assert_eq!(
        (p.birth_day, p.birth_month, p.birth_yy, p.female, p.serial),
        (3, 7, 85, true, 12)
    );
    assert!(decode_nik("150703430785001").is_none());
    assert!(decode_nik("1507037207850012").is_none(), "day 32");
    assert!(decode_nik("1507030313850012").is_none(), "month 13");
    assert!(decode_nik("1507030307850000").is_none(), "serial 0");
}

/// Times the default (100 000 residents) generation; run with
/// `cargo test --release -p jembatan-demo -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing, run in release"]
async fn default_generation_timing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let start = std::time::Instant::now();
    let dbs = generate(dir.path(), &DataOptions::default())
        .await
        .expect("generate");
    let elapsed = start.elapsed();
    for d in &dbs {
        println!("{} {:?}", d.agency, d.tables);
    }
    println!("generated in {elapsed:?}");
    assert!(Path::new(&dbs[0].path).exists());
}
