//! The TLS material a running service uses, reloaded from disk without a
//! restart: its own certificate and key (swapped atomically for the next
//! handshake; connections already open keep theirs) and the CA's
//! revocation list. A watcher polls the files every few seconds; a file
//! that does not load is logged and the material in force stays.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use jembatan_core::Identity;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use rustls::sign::CertifiedKey;
use x509_parser::certificate::X509Certificate;

use crate::crl::{CertError, RevocationList, Serial, check_issued_by, pem_contents};
use crate::{PkiError, TlsFiles, identity_from_der, read};

/// How often the watcher looks at the files.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);

/// This service's certificate in force.
#[derive(Debug)]
pub(crate) struct Own {
    pub(crate) key: Arc<CertifiedKey>,
    pub(crate) serial: Serial,
}

/// What identifies a file's version on disk without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: meta.len(),
        modified: meta.modified().ok(),
        #[cfg(unix)]
        inode: std::os::unix::fs::MetadataExt::ino(&meta),
    })
}

/// The stamps of the files last looked at.
#[derive(Debug, Default)]
struct Seen {
    own: Option<(Option<Stamp>, Option<Stamp>)>,
    crl: Option<Option<Stamp>>,
}

/// A service's TLS material, shared by its acceptor or connector, its
/// verifiers and its watcher.
#[derive(Debug)]
pub(crate) struct Live {
    pub(crate) files: TlsFiles,
    /// `server` or `client`, for the log.
    side: &'static str,
    pub(crate) provider: Arc<CryptoProvider>,
    pub(crate) roots: Arc<rustls::RootCertStore>,
    ca_der: Vec<u8>,
    identity: Identity,
    own: ArcSwap<Own>,
    revoked: ArcSwap<RevocationList>,
    seen: Mutex<Seen>,
    watching: AtomicBool,
    /// Set while the list in force is past its `nextUpdate` and that has
    /// been logged.
    expiry_logged: AtomicBool,
}

impl Live {
    /// Loads the CA, this service's certificate and key, and the
    /// revocation list if `files` names one; every one must be usable.
    pub(crate) fn load(files: &TlsFiles, side: &'static str) -> Result<Arc<Live>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let ca_der =
            pem_contents(&read(&files.ca)?).map_err(|source| PkiError::BadCertificate {
                path: files.ca.clone(),
                source,
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(ca_der.clone()))
            .map_err(|e| PkiError::BadCertificate {
                path: files.ca.clone(),
                source: CertError::NotTrustAnchor(e.to_string()),
            })?;
        let seen = Seen {
            own: Some((stamp(&files.cert), stamp(&files.key))),
            crl: files.crl.as_deref().map(stamp),
        };
        let (own, identity) = load_own(files, &provider, &ca_der, None)?;
        let revoked = match &files.crl {
            Some(path) => RevocationList::load(path, &ca_der)?,
            None => RevocationList::default(),
        };
        Ok(Arc::new(Live {
            files: files.clone(),
            side,
            provider,
            roots: Arc::new(roots),
            ca_der,
            identity,
            own: ArcSwap::from_pointee(own),
            revoked: ArcSwap::from_pointee(revoked),
            seen: Mutex::new(seen),
            watching: AtomicBool::new(false),
            expiry_logged: AtomicBool::new(false),
        }))
    }

    pub(crate) fn own(&self) -> Arc<Own> {
        self.own.load_full()
    }

    pub(crate) fn revoked(&self) -> Arc<RevocationList> {
        self.revoked.load_full()
    }

    pub(crate) fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Looks at the files once and reloads what changed.
    pub(crate) fn poll(&self) {
        let (own_changed, crl_changed) = {
            let Ok(mut seen) = self.seen.lock() else {
                return;
            };
            let own_now = (stamp(&self.files.cert), stamp(&self.files.key));
            let own_changed = seen.own.as_ref() != Some(&own_now);
            seen.own = Some(own_now);
            let crl_now = self.files.crl.as_deref().map(stamp);
            let crl_changed = crl_now.is_some() && seen.crl != crl_now;
            seen.crl = crl_now;
            (own_changed, crl_changed)
        };
        if own_changed {
            self.reload_own();
        }
        if crl_changed && let Some(path) = &self.files.crl {
            self.reload_crl(path);
        }
        self.log_expiry();
    }

    /// Logs once when the list in force passes its `nextUpdate`, and once
    /// when a renewed list ends that.
    fn log_expiry(&self) {
        let list = self.revoked();
        let crl = self
            .files
            .crl
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        match list.expired(time::OffsetDateTime::now_utc()) {
            Some(next_update) => {
                if !self.expiry_logged.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        side = self.side,
                        crl = %crl,
                        number = list.number,
                        next_update = %next_update,
                        "revocation list expired: agency, integrator, auditor and operator certificates are refused until a renewed list is installed (jembatan pki renew-crl)"
                    );
                }
            }
            None => {
                if self.expiry_logged.swap(false, Ordering::AcqRel) {
                    tracing::info!(side = self.side, crl = %crl, number = list.number, "revocation list current again");
                }
            }
        }
    }

    fn reload_own(&self) {
        let current = self.own.load();
        let cert = self.files.cert.display();
        match load_own(
            &self.files,
            &self.provider,
            &self.ca_der,
            Some(&self.identity),
        ) {
            Ok((own, _)) if own.key.cert == current.key.cert => {
                tracing::debug!(side = self.side, cert = %cert, "certificate files touched, unchanged");
            }
            Ok((own, _)) => {
                tracing::info!(
                    side = self.side,
                    cert = %cert,
                    old_serial = %current.serial,
                    serial = %own.serial,
                    "reloaded certificate: new handshakes present the new one"
                );
                self.own.store(Arc::new(own));
            }
            Err(err) => {
                tracing::error!(
                    side = self.side,
                    error = %err,
                    serial = %current.serial,
                    "certificate not reloaded; the one in force stays"
                );
            }
        }
    }

    fn reload_crl(&self, path: &Path) {
        let current = self.revoked.load();
        match RevocationList::load(path, &self.ca_der) {
            Ok(list) if list.number < current.number => {
                tracing::error!(
                    side = self.side,
                    crl = %path.display(),
                    number = list.number,
                    in_force = current.number,
                    "revocation list refused: it is older than the one in force, which stays"
                );
            }
            Ok(list) if list == **current => {
                tracing::debug!(side = self.side, crl = %path.display(), "revocation list touched, unchanged");
            }
            Ok(list) => {
                tracing::info!(
                    side = self.side,
                    crl = %path.display(),
                    number = list.number,
                    revoked = list.len(),
                    "reloaded revocation list"
                );
                self.revoked.store(Arc::new(list));
            }
            Err(err) => {
                tracing::error!(
                    side = self.side,
                    error = %err,
                    in_force = current.number,
                    "revocation list refused; the one in force stays"
                );
            }
        }
    }

    /// Starts the watcher once; it ends when the last user of `live` is
    /// gone. Needs a Tokio runtime.
    pub(crate) fn watch(live: &Arc<Live>, every: Duration) {
        if live.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Live> = Arc::downgrade(live);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(live) = weak.upgrade() else {
                    break;
                };
                // file reads stay off the runtime's workers
                if tokio::task::spawn_blocking(move || live.poll())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
    }
}

/// Loads and checks this service's certificate and key: they must match,
/// the certificate must be issued by the CA, be valid now, and carry a
/// Jembatan identity — the same as `expected` when reloading.
fn load_own(
    files: &TlsFiles,
    provider: &CryptoProvider,
    ca_der: &[u8],
    expected: Option<&Identity>,
) -> Result<(Own, Identity), PkiError> {
    let bad = |path: &PathBuf, source: CertError| PkiError::BadCertificate {
        path: path.clone(),
        source,
    };
    let cert_pem = read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&files.cert, CertError::NotPem(e.to_string())))?;
    let leaf = chain
        .first()
        .ok_or_else(|| bad(&files.cert, CertError::Empty))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| bad(&files.cert, CertError::NotX509(e.to_string())))?;
    let (_, ca) = x509_parser::parse_x509_certificate(ca_der)
        .map_err(|e| bad(&files.ca, CertError::NotX509(e.to_string())))?;
    check_issued_by(&parsed, &ca).map_err(|m| bad(&files.cert, m))?;
    check_valid_now(&parsed).map_err(|m| bad(&files.cert, m))?;
    let identity = identity_from_der(leaf).map_err(|e| bad(&files.cert, e.into()))?;
    if let Some(expected) = expected
        && &identity != expected
    {
        return Err(bad(
            &files.cert,
            CertError::OtherIdentity {
                found: identity,
                expected: expected.clone(),
            },
        ));
    }
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| bad(&files.key, CertError::NotPemKey(e.to_string())))?;
    let serial = Serial::from_der_integer(parsed.raw_serial());
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        bad(
            &files.key,
            CertError::KeyMismatch {
                cert: files.cert.clone(),
                message: e.to_string(),
            },
        )
    })?;
    Ok((
        Own {
            key: Arc::new(key),
            serial,
        },
        identity,
    ))
}

fn check_valid_now(cert: &X509Certificate<'_>) -> Result<(), CertError> {
    let validity = cert.validity();
    if !validity.is_valid() {
        return Err(CertError::NotValidNow {
            not_before: validity.not_before.to_string(),
            not_after: validity.not_after.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ca;
    use crate::crl::Reason;
    use jembatan_core::Role;

    fn broker() -> Identity {
        Identity::new(Role::Broker, None).unwrap()
    }

    #[test]
    fn rotation_and_revocation_reload_and_bad_files_leave_what_is_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(&dir.path().join("ca"), "test CA").unwrap();
        ca.write_crl(&RevocationList::default()).unwrap();
        let mut files = ca.issue_to(&broker(), &[], 1, "broker").unwrap();
        files.crl = Some(Ca::crl_path(ca.dir()));
        let live = Live::load(&files, "server").unwrap();
        let first = live.own().serial.clone();
        assert_eq!(live.identity(), &broker());
        live.poll();
        assert_eq!(live.own().serial, first, "nothing changed on disk");

        // rotation: a new certificate and key from the same CA
        ca.issue_to(&broker(), &[], 1, "broker").unwrap();
        live.poll();
        let second = live.own().serial.clone();
        assert_ne!(second, first);
        assert_eq!(second, ca.serial_of_issued(&files.cert).unwrap());

        // refused, the certificate in force stays: a key that does not go
        // with the certificate, another identity, another CA
        let stray = ca.issue(&broker(), &[], 1).unwrap();
        std::fs::write(&files.key, &stray.key_pem).unwrap();
        live.poll();
        assert_eq!(live.own().serial, second, "mismatched key");
        let agency = Identity::agency("dinsos".parse().unwrap());
        let wrong = ca.issue(&agency, &[], 1).unwrap();
        std::fs::write(&files.key, &wrong.key_pem).unwrap();
        std::fs::write(&files.cert, &wrong.cert_pem).unwrap();
        live.poll();
        assert_eq!(live.own().serial, second, "another identity");
        let other = Ca::create(&dir.path().join("other"), "test CA").unwrap();
        let foreign = other.issue(&broker(), &[], 1).unwrap();
        std::fs::write(&files.key, &foreign.key_pem).unwrap();
        std::fs::write(&files.cert, &foreign.cert_pem).unwrap();
        live.poll();
        assert_eq!(live.own().serial, second, "another CA");
        // a good pair again is taken
        ca.issue_to(&broker(), &[], 1, "broker").unwrap();
        live.poll();
        assert_ne!(live.own().serial, second);

        // revocation takes effect on the next look
        let crl = files.crl.clone().unwrap();
        assert!(live.revoked().is_empty());
        ca.revoke(&first, Reason::KeyCompromise).unwrap();
        let older = std::fs::read(&crl).unwrap();
        live.poll();
        assert!(live.revoked().is_revoked(&first));
        ca.revoke(&second, Reason::Superseded).unwrap();
        live.poll();
        assert_eq!(live.revoked().number, 3);
        assert!(live.revoked().is_revoked(&second));

        // refused, the list in force stays: garbage, a list signed by
        // another CA, an older list put back
        std::fs::write(&crl, "not a list").unwrap();
        live.poll();
        assert_eq!(live.revoked().number, 3);
        other.write_crl(&RevocationList::default()).unwrap();
        std::fs::copy(Ca::crl_path(other.dir()), &crl).unwrap();
        live.poll();
        assert_eq!(live.revoked().number, 3);
        std::fs::write(&crl, &older).unwrap();
        live.poll();
        assert_eq!(live.revoked().number, 3);
        assert!(live.revoked().is_revoked(&second));
        // a missing file too
        std::fs::remove_file(&crl).unwrap();
        live.poll();
        assert!(live.revoked().is_revoked(&second));
    }

    /// A list past its next update refuses revocable identities with a
    /// clear error, lets the federation's services through, and a renewed
    /// list is picked up without a restart.
    #[test]
    fn an_expired_list_fails_closed_until_a_renewed_one_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(&dir.path().join("ca"), "test CA").unwrap();
        let now = time::OffsetDateTime::now_utc();
        let hour = time::Duration::hours(1);
        ca.sign_crl(&RevocationList::default(), now - 2 * hour, now - hour)
            .unwrap();
        let mut files = ca.issue_to(&broker(), &[], 1, "broker").unwrap();
        files.crl = Some(Ca::crl_path(ca.dir()));
        let live = Live::load(&files, "server").unwrap();
        let revocations = crate::Revocations(Arc::clone(&live));
        let agency = Identity::agency("dinsos".parse().unwrap());
        let roles = [
            (agency, true),
            (Identity::new(Role::Auditor, None).unwrap(), true),
            (Identity::new(Role::Operator, None).unwrap(), true),
            (
                Identity::new(Role::Integrator, Some("dinsos".parse().unwrap())).unwrap(),
                true,
            ),
            (
                Identity::new(Role::Adapter, Some("dinsos".parse().unwrap())).unwrap(),
                false,
            ),
            (broker(), false),
        ];
        let certs: Vec<_> = roles
            .iter()
            .map(|(id, refused)| {
                let issued = ca.issue(id, &[], 1).unwrap();
                let der = pem_contents(issued.cert_pem.as_bytes()).unwrap();
                (id.clone(), CertificateDer::from(der), *refused)
            })
            .collect();
        for (id, cert, refused) in &certs {
            let result = crate::identity_of(Some(std::slice::from_ref(cert)), Some(&revocations));
            if *refused {
                let err = result.unwrap_err();
                assert!(
                    matches!(err, crate::PeerError::RevocationListExpired { .. }),
                    "{id}: {err}"
                );
                let message = err.to_string();
                assert!(message.contains("revocation list expired"), "{message}");
                assert!(message.contains(&id.role.to_string()), "{message}");
            } else {
                assert_eq!(result.as_ref(), Ok(id), "{id}");
            }
        }
        // renewed on disk: picked up on the next look, everyone is served
        ca.renew_crl(time::Duration::days(7)).unwrap();
        live.poll();
        assert_eq!(live.revoked().number, 2);
        for (id, cert, _) in &certs {
            let result = crate::identity_of(Some(std::slice::from_ref(cert)), Some(&revocations));
            assert_eq!(result.as_ref(), Ok(id), "{id}");
        }
    }

    #[test]
    fn unusable_files_stop_the_service_from_starting() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(dir.path(), "test CA").unwrap();
        let mut files = ca.issue_to(&broker(), &[], 1, "broker").unwrap();
        files.crl = Some(dir.path().join("crl.pem"));
        let err = Live::load(&files, "server").unwrap_err();
        assert!(
            matches!(&err, PkiError::Read { path, .. } if path.ends_with("crl.pem")),
            "{err}"
        );
        std::fs::write(dir.path().join("crl.pem"), ca.cert_pem()).unwrap();
        let err = Live::load(&files, "server").unwrap_err();
        assert!(
            matches!(
                &err,
                PkiError::BadCrl {
                    source: crate::CrlError::OtherLabel(_),
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("not a usable revocation list"),
            "{err}"
        );
        files.crl = None;
        let other = ca.issue(&broker(), &[], 1).unwrap();
        std::fs::write(&files.key, other.key_pem).unwrap();
        let err = Live::load(&files, "server").unwrap_err();
        assert!(
            matches!(
                &err,
                PkiError::BadCertificate {
                    source: CertError::KeyMismatch { .. },
                    ..
                }
            ),
            "{err}"
        );
    }
}
