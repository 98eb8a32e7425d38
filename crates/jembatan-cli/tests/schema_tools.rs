//! `jembatan schema check` and `jembatan mapping test`, offline, on the
//! demo's schemas under `schemas/`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn jembatan() -> Command {
    Command::new(env!("CARGO_BIN_EXE_jembatan"))
}

fn schemas() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

fn text(out: &Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check(old: &Path, new: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = jembatan()
        .args(["schema", "check", "--old"])
        .arg(old)
        .arg("--new")
        .arg(new)
        .args(extra)
        .output()
        .unwrap();
    text(&out)
}

#[test]
fn schema_check_works_offline_with_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let v1 = schemas().join("dinsos.warga.v1.json");
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&v1).unwrap()).unwrap();

    // the same schema: compatible, exit 0
    let (code, out, err) = check(&v1, &v1, &["--mode", "FULL_TRANSITIVE"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("compatible"), "{out}");

    // narrowing an enum breaks BACKWARD: exit 1 with kind, path and counterexample
    doc["properties"]["sex"]["enum"] = serde_json::json!(["M"]);
    let narrowed = dir.path().join("narrowed.json");
    std::fs::write(&narrowed, doc.to_string()).unwrap();
    let (code, out, err) = check(&v1, &narrowed, &["--mode", "BACKWARD"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("enum_narrowed at /properties/sex/enum"),
        "{out}"
    );
    let example = out
        .lines()
        .find_map(|l| l.split_once("rejects): ").map(|(_, j)| j.to_owned()))
        .unwrap_or_else(|| panic!("no counterexample in {out}"));
    let example: serde_json::Value = serde_json::from_str(&example).unwrap();
    assert_eq!(example["sex"], "F", "{example}");
    // ... but FORWARD is fine: every document of the new schema fits the old
    let (code, out, err) = check(&v1, &narrowed, &["--mode", "FORWARD"]);
    assert_eq!(code, Some(0), "{out}{err}");
    // NONE accepts anything
    let (code, _, _) = check(&v1, &narrowed, &["--mode", "NONE"]);
    assert_eq!(code, Some(0));

    // an optional property on an open model: refused unless optional-friendly
    let open = serde_json::json!({"type": "object", "properties": {"a": {"type": "string"}}});
    let mut open_new = open.clone();
    open_new["properties"]["b"] = serde_json::json!({"type": "integer"});
    let (old_path, new_path) = (dir.path().join("open.json"), dir.path().join("open2.json"));
    std::fs::write(&old_path, open.to_string()).unwrap();
    std::fs::write(&new_path, open_new.to_string()).unwrap();
    let (code, out, _) = check(&old_path, &new_path, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("property_added_to_open_content_model"),
        "{out}"
    );
    let (code, out, err) = check(&old_path, &new_path, &["--optional-friendly"]);
    assert_eq!(code, Some(0), "{out}{err}");

    // an invalid schema, an unknown mode, a missing file: exit 2
    let invalid = dir.path().join("invalid.json");
    std::fs::write(&invalid, r#"{"type": 5}"#).unwrap();
    let (code, _, err) = check(&v1, &invalid, &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("/type"), "{err}");
    let (code, _, err) = check(&v1, &v1, &["--mode", "SIDEWAYS"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("SIDEWAYS"), "{err}");
    let (code, _, _) = check(&v1, &dir.path().join("missing.json"), &[]);
    assert_eq!(code, Some(2));
}

fn mapping_test(input: &str) -> (Option<i32>, String, String) {
    let s = schemas();
    let mut child = jembatan()
        .args(["mapping", "test", "--mapping"])
        .arg(s.join("disdukcapil.penduduk-to-dinsos.warga.toml"))
        .arg("--source-schema")
        .arg(s.join("disdukcapil.penduduk.v1.json"))
        .arg("--target-schema")
        .arg(s.join("dinsos.warga.v1.json"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    text(&child.wait_with_output().unwrap())
}

fn resident(nik: &str, tgl: &str, jk: &str, status: &str) -> String {
    serde_json::json!({
        "nik": nik, "no_kk": "1507010101000001", "nama_lengkap": "SITI AMINAH",
        "tempat_lahir": "MUARA SABAK", "tgl_lahir": tgl, "jenis_kelamin": jk,
        "agama": "ISLAM", "status_perkawinan": "KAWIN", "pekerjaan": "PETANI",
        "hubungan_keluarga": "ISTRI", "alamat": "JL. PELABUHAN NO. 3 RT 001 RW 002",
        "rt": "001", "rw": "002", "kode_desa": "15.07.01.2001",
        "kode_kecamatan": "15.07.01", "status": status
    })
    .to_string()
}

#[test]
fn mapping_test_translates_sample_records_and_names_the_first_failure() {
    let input = [
        resident("1507014107850001", "01-07-1985", "P", "HIDUP"),
        resident("1507011203900002", "12-03-1990", "L", "MENINGGAL"),
    ]
    .join("\n");
    let (code, out, err) = mapping_test(&input);
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        serde_json::json!({
            "nik": "1507014107850001", "family_card": "1507010101000001",
            "full_name": "SITI AMINAH", "birth_date": "1985-07-01", "sex": "F",
            "district_code": "15.07.01", "address": {"village_code": "15.07.01.2001"},
            "alive": true
        })
    );
    assert_eq!(lines[1]["sex"], "M");
    assert_eq!(lines[1]["alive"], false);

    // record 2 breaks the source schema (jenis_kelamin X); record 3 is never read
    let input = [
        resident("1507014107850001", "01-07-1985", "P", "HIDUP"),
        resident("1507011203900002", "12-03-1990", "X", "HIDUP"),
        "not json".to_owned(),
    ]
    .join("\n");
    let (code, out, err) = mapping_test(&input);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("record 2"), "{err}");
    assert!(err.contains("jenis_kelamin"), "{err}");
    assert_eq!(
        out.lines().count(),
        1,
        "records before the failure are written"
    );

    // a date that parses against the pattern but is not a date fails in the mapping
    let (code, _, err) = mapping_test(&resident("1507014107850001", "31-02-1985", "P", "HIDUP"));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("record 1") && err.contains("birth_date"),
        "{err}"
    );
}
