//! A development CA and its certificates, by the names a federation gives
//! its members ("broker", "adapter", "dinsos", …).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jembatan_core::Identity;
use jembatan_pki::{Ca, PkiError, RevocationList, TlsFiles};

/// A development CA in a directory and the certificates it issued.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
    files: HashMap<String, TlsFiles>,
}

impl Pki {
    /// Creates a CA in `dir` and issues a certificate for each
    /// `(name, identity)`; a name's files are then `pki[name]`.
    pub fn issue(dir: &Path, members: &[(&str, Identity)]) -> Result<Pki, PkiError> {
        let identities: Vec<Identity> = members.iter().map(|(_, id)| id.clone()).collect();
        let issued = jembatan_pki::dev_pki(dir, &identities)?;
        // issued in the order asked
        let files = members
            .iter()
            .zip(issued)
            .map(|((name, _), (_, files))| ((*name).to_owned(), files))
            .collect();
        Ok(Pki {
            dir: dir.to_owned(),
            files,
        })
    }

    /// The files issued under `name`.
    pub fn get(&self, name: &str) -> Option<&TlsFiles> {
        self.files.get(name)
    }

    /// The CA's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA itself, to issue, rotate or revoke.
    pub fn ca(&self) -> Result<Ca, PkiError> {
        Ca::load(&self.dir)
    }

    /// Writes the CA's revocation list, empty, and returns its path (a
    /// server's `[tls] crl`).
    pub fn revocation_list(&self) -> Result<PathBuf, PkiError> {
        self.ca()?.write_crl(&RevocationList::default())?;
        Ok(Ca::crl_path(&self.dir))
    }
}

impl std::ops::Index<&str> for Pki {
    type Output = TlsFiles;

    fn index(&self, name: &str) -> &TlsFiles {
        self.files
            .get(name)
            .unwrap_or_else(|| panic!("no certificate was issued as {name:?}"))
    }
}
