//! PKCS#12 export: a certificate chain and its private key in one
//! password-protected file, for keystores that read no PEM (Java's
//! `KeyStore.getInstance("PKCS12")`).

use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why a PKCS#12 file could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Pkcs12Error {
    #[error("the certificate file holds no PEM certificate")]
    NoCertificate,
    #[error("the certificate PEM does not parse: {0}")]
    BadCertificatePem(String),
    #[error("the key file holds no PEM private key: {0}")]
    BadKeyPem(String),
    #[error("the private key is not PKCS#8 (BEGIN PRIVATE KEY)")]
    NotPkcs8,
    #[error("the password is empty")]
    EmptyPassword,
    #[error("PKCS#12 encoding failed: {0}")]
    Encode(String),
}

/// `cert_pem` (the holder's certificate first, then any chain) and its
/// PKCS#8 private key `key_pem` as a PKCS#12 file under `alias`, encrypted
/// with `password` (PBES2: PBKDF2 with HMAC-SHA-256 and AES-256-CBC; MAC
/// HMAC-SHA-256).
pub fn pkcs12(
    cert_pem: &[u8],
    key_pem: &[u8],
    alias: &str,
    password: &str,
) -> Result<Vec<u8>, Pkcs12Error> {
    if password.is_empty() {
        return Err(Pkcs12Error::EmptyPassword);
    }
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .map(|der| {
            let der = der.map_err(|e| Pkcs12Error::BadCertificatePem(e.to_string()))?;
            Certificate::from_der(&der).map_err(|e| Pkcs12Error::BadCertificatePem(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if chain.is_empty() {
        return Err(Pkcs12Error::NoCertificate);
    }
    let key = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(PrivateKeyDer::Pkcs8(der)) => PrivateKey::from_der(der.secret_pkcs8_der())
            .map_err(|e| Pkcs12Error::BadKeyPem(e.to_string()))?,
        Ok(_) => return Err(Pkcs12Error::NotPkcs8),
        Err(e) => return Err(Pkcs12Error::BadKeyPem(e.to_string())),
    };
    let local_key_id = ring::digest::digest(&ring::digest::SHA256, chain[0].as_der());
    let mut store = KeyStore::new();
    store.add_entry(
        alias,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(local_key_id.as_ref(), key, chain)),
    );
    store
        .writer(password)
        .write()
        .map_err(|e| Pkcs12Error::Encode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ca;
    use jembatan_core::{AgencyId, Identity, Role};
    use p12_keystore::Pkcs12ImportPolicy;

    #[test]
    fn exports_a_certificate_and_key_that_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(&dir.path().join("ca"), "Test CA").unwrap();
        let agency: AgencyId = "dinsos".parse().unwrap();
        let identity = Identity::new(Role::Agency, Some(agency)).unwrap();
        let files = ca.issue_to(&identity, &[], 30, "agency-dinsos").unwrap();
        let cert_pem = std::fs::read(&files.cert).unwrap();
        let key_pem = std::fs::read(&files.key).unwrap();

        let p12 = pkcs12(&cert_pem, &key_pem, "agency-dinsos", "s3cret").unwrap();
        let store = KeyStore::from_pkcs12(&p12, "s3cret", Pkcs12ImportPolicy::Strict).unwrap();
        let (alias, chain) = store.private_key_chain().unwrap();
        assert_eq!(alias, "agency-dinsos");
        let cert_der = CertificateDer::from_pem_slice(&cert_pem).unwrap();
        assert_eq!(chain.certs().len(), 1);
        assert_eq!(chain.certs()[0].as_der(), cert_der.as_ref());
        let Ok(PrivateKeyDer::Pkcs8(key_der)) = PrivateKeyDer::from_pem_slice(&key_pem) else {
            panic!("the issued key is not PKCS#8");
        };
        assert_eq!(chain.key().as_der(), key_der.secret_pkcs8_der());
        // the identity survives the trip
        let back = crate::identity_from_der(chain.certs()[0].as_der()).unwrap();
        assert_eq!(back, identity);

        // the password protects it
        assert!(KeyStore::from_pkcs12(&p12, "wrong", Pkcs12ImportPolicy::Strict).is_err());
    }

    #[test]
    fn bad_input_gets_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(&dir.path().join("ca"), "Test CA").unwrap();
        let identity = Identity::new(Role::Broker, None).unwrap();
        let files = ca.issue_to(&identity, &[], 30, "broker").unwrap();
        let cert_pem = std::fs::read(&files.cert).unwrap();
        let key_pem = std::fs::read(&files.key).unwrap();
        for (cert, key, password, want) in [
            (&key_pem[..], &key_pem[..], "pw", "no PEM certificate"),
            (&cert_pem[..], &cert_pem[..], "pw", "no PEM private key"),
            (&cert_pem[..], &key_pem[..], "", "password is empty"),
        ] {
            let err = pkcs12(cert, key, "x", password).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }
}
