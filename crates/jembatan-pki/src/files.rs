//! Writing key material and the files services reload: every file is
//! written whole to a temporary file beside its final name, created with
//! its final mode (0600 for secrets — never readable by others, not even
//! for a moment), synced, renamed (or linked) into place, and the
//! directory synced. A reader sees the old file or the new one; a crash
//! leaves one or the other, never a torn or empty key.
//!
//! Every secret Jembatan writes — the CA key, certificate keys from
//! `jembatan pki`, the broker's audit HMAC key, mapping secrets and the
//! checkpoint signer key — goes through [`write_secret`] or
//! [`create_secret`].

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of secret files.
pub const SECRET_MODE: u32 = 0o600;
/// Mode of public files (certificates, revocation lists, public keys).
const PUBLIC_MODE: u32 = 0o644;

/// Writes a secret to `path` (mode 0600), replacing any file there.
pub fn write_secret(path: &Path, data: &[u8]) -> io::Result<()> {
    put(path, data, SECRET_MODE, Place::Replace)
}

/// Writes a secret to `path` (mode 0600) only if no file is there yet:
/// `AlreadyExists` otherwise, with the existing file untouched — two
/// processes creating the same key at once end up sharing one.
pub fn create_secret(path: &Path, data: &[u8]) -> io::Result<()> {
    put(path, data, SECRET_MODE, Place::CreateNew)
}

/// Writes a public file (certificate, revocation list) to `path`,
/// replacing any file there.
pub fn write_public(path: &Path, data: &[u8]) -> io::Result<()> {
    put(path, data, PUBLIC_MODE, Place::Replace)
}

/// Writes a public file to `path` only if no file is there yet.
pub fn create_public(path: &Path, data: &[u8]) -> io::Result<()> {
    put(path, data, PUBLIC_MODE, Place::CreateNew)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Replace,
    CreateNew,
}

fn put(path: &Path, data: &[u8], mode: u32, place: Place) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    let (tmp, mut file) = temp_file(&dir, path, mode)?;
    let written = file
        .write_all(data)
        .and_then(|()| file.sync_all())
        .and_then(|()| match place {
            Place::Replace => fs::rename(&tmp, path),
            // a hard link never replaces: the file appears whole or not
            // at all, and an existing one wins
            Place::CreateNew => fs::hard_link(&tmp, path).and_then(|()| fs::remove_file(&tmp)),
        });
    if let Err(err) = written {
        let _ = fs::remove_file(&tmp);
        return Err(err);
    }
    sync_dir(&dir)
}

/// A new, empty file beside `path`, created with `mode`.
fn temp_file(dir: &Path, path: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{}.{n}.tmp", std::process::id()));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        match options.open(&tmp) {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Makes a rename or link in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn secrets_are_0600_whole_and_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("keys/hmac.key");
        create_secret(&key, b"first\n").unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(fs::read(&key).unwrap(), b"first\n");
        let err = create_secret(&key, b"second\n").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&key).unwrap(), b"first\n", "the existing key wins");
        write_secret(&key, b"third\n").unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(fs::read(&key).unwrap(), b"third\n");
        let cert = dir.path().join("keys/cert.pem");
        write_public(&cert, b"cert").unwrap();
        assert_eq!(mode(&cert) & 0o600, 0o600);
        // nothing left behind
        let names: Vec<_> = fs::read_dir(dir.path().join("keys"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    /// Watches the directory while secrets are written: no file in it is
    /// ever readable by group or others, temporary files included.
    #[test]
    fn no_secret_file_is_ever_readable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let dir = dir.path().to_owned();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut seen = 0u64;
                let mut wide = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    for entry in fs::read_dir(&dir).unwrap().flatten() {
                        // files vanish while we look: the temporary ones
                        if let Ok(meta) = entry.metadata() {
                            seen += 1;
                            if meta.permissions().mode() & 0o077 != 0 {
                                wide.push(entry.file_name());
                            }
                        }
                    }
                }
                (seen, wide)
            })
        };
        for i in 0..60 {
            let path = dir.path().join(format!("k{}", i % 7));
            write_secret(&path, &[b'x'; 4096]).unwrap();
            let _ = create_secret(&dir.path().join(format!("c{i}")), b"y");
        }
        stop.store(true, Ordering::Relaxed);
        let (seen, wide) = watcher.join().unwrap();
        assert!(seen > 0, "the watcher saw no file");
        assert!(wide.is_empty(), "readable by others: {wide:?}");
    }
}
