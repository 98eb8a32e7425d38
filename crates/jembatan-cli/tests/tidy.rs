//! Repository hygiene, checked as tests so they hold without anyone
//! remembering them: every Rust file says what lives in it (a `//!` line
//! first), and every lint `allow` says why.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The `.rs` files of every crate's `src`, `tests` and `benches`, of the
/// fuzz targets and of the end-to-end tests.
fn workspace_rust_files() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = Vec::new();
    let crates = std::fs::read_dir(root.join("crates")).expect("crates/");
    for krate in crates.flatten() {
        for part in ["src", "tests", "benches"] {
            rust_files(&krate.path().join(part), &mut files);
        }
    }
    rust_files(&root.join("fuzz/fuzz_targets"), &mut files);
    // the end-to-end tests of the built binary
    rust_files(&root.join("tests"), &mut files);
    files.sort();
    assert!(files.len() > 100, "found only {} files", files.len());
    files
}

fn relative(path: &Path) -> String {
    let root = workspace_root();
    path.strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_rust_file_opens_with_a_module_doc_line() {
    let missing: Vec<String> = workspace_rust_files()
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| relative(f))
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` line: {missing:#?}"
    );
}

/// The `allow` attributes in `text` with no comment saying why: none on
/// their line and none on the line above. Returns their line numbers.
fn unexplained_allows(text: &str) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        if !(code.starts_with("#[allow(") || code.starts_with("#![allow(")) {
            continue;
        }
        let commented_here = code.contains("//");
        let commented_above = i > 0 && {
            let above = lines[i - 1].trim_start();
            above.starts_with("//") && !above.starts_with("//!")
        };
        if !commented_here && !commented_above {
            found.push(i + 1);
        }
    }
    found
}

#[test]
fn allows_are_recognised_with_and_without_their_reason() {
    let cases: [(&str, &str, &[usize]); 5] = [
        (
            "trailing comment",
            "#![allow(dead_code)] // each test binary uses a part\n",
            &[],
        ),
        (
            "comment above",
            "// generated code\n#[allow(clippy::too_many_arguments)]\nfn f() {}\n",
            &[],
        ),
        ("bare inner", "//! m\n#![allow(dead_code)]\n", &[2]),
        (
            "bare outer, indented",
            "fn f() {\n    #[allow(unused)]\n    let x = 1;\n}\n",
            &[2],
        ),
        (
            "in a string, not an attribute",
            "let s = \"#[allow(x)]\";\n",
            &[],
        ),
    ];
    for (name, text, want) in cases {
        assert_eq!(unexplained_allows(text), want, "{name}");
    }
}

#[test]
fn every_allow_says_why() {
    let mut bare = Vec::new();
    for file in workspace_rust_files() {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for line in unexplained_allows(&text) {
            bare.push(format!("{}:{line}", relative(&file)));
        }
    }
    // the workspace's lint table: `name = "allow" # why`
    let manifest =
        std::fs::read_to_string(workspace_root().join("Cargo.toml")).expect("Cargo.toml");
    for (i, line) in manifest.lines().enumerate() {
        if line.contains("= \"allow\"") && !line.contains('#') {
            bare.push(format!("Cargo.toml:{}", i + 1));
        }
    }
    assert!(
        bare.is_empty(),
        "`allow`s without a comment saying why: {bare:#?}"
    );
}
