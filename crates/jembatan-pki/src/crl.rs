//! Certificate revocation: the CA's revocation list (`crl.pem`, a standard
//! X.509 CRL signed by the CA), how `jembatan pki revoke` maintains it,
//! and how services load and check it.
//!
//! A list is only taken into force after its signature verifies with the
//! CA's key, its issuer is the CA, and its CRL number is not lower than
//! that of the list already in force — an older copy put back never
//! un-revokes anything.
//!
//! A list is current until its `nextUpdate`. Past it, services fail
//! closed: they refuse the certificates of agencies, integrators, auditors
//! and operators (see [`RevocationList::expired`]) until a renewed list
//! (`jembatan pki renew-crl`, or any `pki revoke`) is installed; the list's
//! entries stay in force meanwhile.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevocationReason, RevokedCertParams};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::{Ca, PkiError, read, write_atomic};

/// Text that is not a certificate serial number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a certificate serial number (hex)")]
pub struct BadSerial(pub String);

/// Why a certificate (or the CA's, or a key beside one) is not usable.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("not a PEM certificate: {0}")]
    NotPem(String),
    #[error("not UTF-8 PEM")]
    NotUtf8,
    #[error("not an X.509 certificate: {0}")]
    NotX509(String),
    #[error("holds no certificate")]
    Empty,
    #[error("the CA certificate is unusable: {0}")]
    CaUnusable(String),
    #[error("not usable as a trust anchor: {0}")]
    NotTrustAnchor(String),
    #[error("not usable as the CA's certificate: {0}")]
    NotCa(rcgen::Error),
    #[error("was not issued by this CA (its issuer is \"{issuer}\", the CA is \"{ca}\")")]
    OtherIssuer { issuer: String, ca: String },
    #[error("was not issued by this CA (its signature does not verify with the CA's key: {0})")]
    Signature(String),
    #[error("is not valid now (valid from {not_before} to {not_after})")]
    NotValidNow {
        not_before: String,
        not_after: String,
    },
    #[error(transparent)]
    Identity(#[from] crate::CertIdentityError),
    #[error("carries {found}, but this service is {expected}")]
    OtherIdentity {
        found: jembatan_core::Identity,
        expected: jembatan_core::Identity,
    },
    #[error("not a PEM private key: {0}")]
    NotPemKey(String),
    #[error("does not go with the certificate {}: {message}", cert.display())]
    KeyMismatch { cert: PathBuf, message: String },
}

/// Why a revocation list is not usable, or cannot be signed as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrlError {
    #[error("not a PEM revocation list: {0}")]
    NotPem(String),
    #[error("holds a PEM {0:?}, not an \"X509 CRL\" revocation list")]
    OtherLabel(String),
    #[error("not an X.509 revocation list: {0}")]
    NotX509(String),
    #[error("trailing bytes after the revocation list")]
    TrailingBytes,
    #[error("the CA certificate is unusable: {0}")]
    CaUnusable(String),
    #[error("issued by \"{issuer}\", not by the CA \"{ca}\"")]
    OtherIssuer { issuer: String, ca: String },
    #[error("its signature does not verify with the CA's key ({0})")]
    Signature(String),
    #[error("CRL number is larger than 64 bits")]
    NumberTooLarge,
    #[error("entry {serial}: bad revocation date: {message}")]
    RevocationDate { serial: Serial, message: String },
    #[error("bad {what} time: {message}")]
    Time { what: &'static str, message: String },
    #[error("a list must be current for more than 0 days and at most {max_days} days")]
    Validity { max_days: i64 },
}

/// How long a newly signed list is current (its `nextUpdate`) unless the
/// CA says otherwise: the CA renews it before then.
pub const DEFAULT_VALIDITY: time::Duration = time::Duration::days(30);
/// The longest validity a list may be signed with.
pub const MAX_VALIDITY: time::Duration = time::Duration::days(366);

/// A certificate serial number: the DER integer's magnitude, without
/// leading zero bytes. Shown as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// From the content bytes of a DER INTEGER.
    pub fn from_der_integer(bytes: &[u8]) -> Serial {
        let start = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len().saturating_sub(1));
        Serial(bytes[start..].to_vec())
    }

    /// Parses hex, with or without `:` separators or a `0x` prefix.
    pub fn parse(text: &str) -> Result<Serial, BadSerial> {
        let text = text.trim();
        let digits: String = text
            .strip_prefix("0x")
            .unwrap_or(text)
            .chars()
            .filter(|c| *c != ':')
            .collect();
        if digits.is_empty() || digits.len() > 42 {
            return Err(BadSerial(text.to_owned()));
        }
        let padded = if digits.len() % 2 == 1 {
            format!("0{digits}")
        } else {
            digits
        };
        let bytes = (0..padded.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&padded[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| BadSerial(text.to_owned()))?;
        Ok(Serial::from_der_integer(&bytes))
    }

    /// The serial of a DER certificate.
    pub fn of_der(der: &[u8]) -> Result<Serial, CertError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CertError::NotX509(e.to_string()))?;
        Ok(Serial::from_der_integer(cert.raw_serial()))
    }

    /// The serial of a PEM certificate.
    pub fn of_pem(pem: &[u8]) -> Result<Serial, CertError> {
        Serial::of_der(&pem_contents(pem)?)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Why a certificate was revoked (RFC 5280 reason codes that apply to a
/// Jembatan certificate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Unspecified,
    KeyCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    PrivilegeWithdrawn,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::Unspecified,
        Reason::KeyCompromise,
        Reason::AffiliationChanged,
        Reason::Superseded,
        Reason::CessationOfOperation,
        Reason::PrivilegeWithdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unspecified => "unspecified",
            Reason::KeyCompromise => "key-compromise",
            Reason::AffiliationChanged => "affiliation-changed",
            Reason::Superseded => "superseded",
            Reason::CessationOfOperation => "cessation-of-operation",
            Reason::PrivilegeWithdrawn => "privilege-withdrawn",
        }
    }

    pub fn parse(text: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.as_str() == text)
    }

    fn to_rcgen(self) -> RevocationReason {
        match self {
            Reason::Unspecified => RevocationReason::Unspecified,
            Reason::KeyCompromise => RevocationReason::KeyCompromise,
            Reason::AffiliationChanged => RevocationReason::AffiliationChanged,
            Reason::Superseded => RevocationReason::Superseded,
            Reason::CessationOfOperation => RevocationReason::CessationOfOperation,
            Reason::PrivilegeWithdrawn => RevocationReason::PrivilegeWithdrawn,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of a revocation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub serial: Serial,
    pub revoked_at: OffsetDateTime,
    /// The RFC 5280 reason code, when the entry carries one.
    pub reason_code: Option<u8>,
}

/// A CA-verified revocation list, in force in a service or being edited
/// by `jembatan pki revoke`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationList {
    /// The CRL number; 0 for the empty list of a service without a CRL.
    pub number: u64,
    pub entries: BTreeMap<Serial, Revoked>,
    /// When the list was signed (`thisUpdate`); `None` for the empty list
    /// of a service without a CRL.
    pub this_update: Option<OffsetDateTime>,
    /// When the CA promises a newer list (`nextUpdate`); past it the list
    /// is expired. `None` for a list without one, which never expires.
    pub next_update: Option<OffsetDateTime>,
}

impl RevocationList {
    pub fn is_revoked(&self, serial: &Serial) -> bool {
        self.entries.contains_key(serial)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The list's `nextUpdate` when `now` is past it: the list can no
    /// longer vouch that a certificate not on it is still good.
    pub fn expired(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        self.next_update.filter(|next| *next < now)
    }

    /// Parses a PEM CRL and checks that `ca_der` (the CA certificate)
    /// issued and signed it.
    pub fn from_pem(pem: &[u8], ca_der: &[u8]) -> Result<RevocationList, CrlError> {
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(pem).map_err(|e| CrlError::NotPem(e.to_string()))?;
        if pem.label != "X509 CRL" {
            return Err(CrlError::OtherLabel(pem.label));
        }
        Self::from_der(&pem.contents, ca_der)
    }

    /// Parses a DER CRL and checks that `ca_der` issued and signed it.
    pub fn from_der(der: &[u8], ca_der: &[u8]) -> Result<RevocationList, CrlError> {
        let (rest, crl) =
            x509_parser::parse_x509_crl(der).map_err(|e| CrlError::NotX509(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CrlError::TrailingBytes);
        }
        let (_, ca) = x509_parser::parse_x509_certificate(ca_der)
            .map_err(|e| CrlError::CaUnusable(e.to_string()))?;
        verify_issued_by(&crl, &ca)?;
        let number = match crl.crl_number() {
            None => 0,
            Some(n) => {
                let bytes = n.to_bytes_be();
                if bytes.len() > 8 {
                    return Err(CrlError::NumberTooLarge);
                }
                bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
            }
        };
        let mut entries = BTreeMap::new();
        for entry in crl.iter_revoked_certificates() {
            let serial = Serial::from_der_integer(entry.raw_serial());
            let revoked_at = OffsetDateTime::from_unix_timestamp(entry.revocation_date.timestamp())
                .map_err(|e| CrlError::RevocationDate {
                    serial: serial.clone(),
                    message: e.to_string(),
                })?;
            let reason_code = entry.reason_code().map(|(_, code)| code.0);
            entries.insert(
                serial.clone(),
                Revoked {
                    serial,
                    revoked_at,
                    reason_code,
                },
            );
        }
        let time = |t: x509_parser::time::ASN1Time, what: &'static str| {
            OffsetDateTime::from_unix_timestamp(t.timestamp()).map_err(|e| CrlError::Time {
                what,
                message: e.to_string(),
            })
        };
        let this_update = Some(time(crl.last_update(), "thisUpdate")?);
        let next_update = crl
            .next_update()
            .map(|t| time(t, "nextUpdate"))
            .transpose()?;
        Ok(RevocationList {
            number,
            entries,
            this_update,
            next_update,
        })
    }

    /// Loads `path` and checks it against the CA certificate `ca_der`.
    pub fn load(path: &Path, ca_der: &[u8]) -> Result<RevocationList, PkiError> {
        let pem = read(path)?;
        RevocationList::from_pem(&pem, ca_der).map_err(|source| PkiError::BadCrl {
            path: path.to_owned(),
            source,
        })
    }
}

fn verify_issued_by(
    crl: &CertificateRevocationList<'_>,
    ca: &X509Certificate<'_>,
) -> Result<(), CrlError> {
    if crl.issuer().as_raw() != ca.subject().as_raw() {
        return Err(CrlError::OtherIssuer {
            issuer: crl.issuer().to_string(),
            ca: ca.subject().to_string(),
        });
    }
    crl.verify_signature(ca.public_key())
        .map_err(|e| CrlError::Signature(e.to_string()))
}

/// What [`Ca::revoke`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// The serial is now on the list, signed as CRL `number`.
    Revoked { number: u64, listed: usize },
    /// The serial was already on the list; nothing changed.
    AlreadyRevoked(Revoked),
}

impl Ca {
    /// The revocation list of the CA in `dir`.
    pub fn crl_path(dir: &Path) -> PathBuf {
        dir.join("crl.pem")
    }

    /// The CA certificate in DER.
    pub fn cert_der(&self) -> Result<Vec<u8>, PkiError> {
        pem_contents(self.cert_pem().as_bytes()).map_err(|source| PkiError::BadCertificate {
            path: Self::cert_path(self.dir()),
            source,
        })
    }

    /// The CA's current revocation list; an empty one when `crl.pem` does
    /// not exist yet.
    pub fn revocation_list(&self) -> Result<RevocationList, PkiError> {
        let path = Self::crl_path(self.dir());
        if !path.exists() {
            return Ok(RevocationList::default());
        }
        RevocationList::load(&path, &self.cert_der()?)
    }

    /// Signs `list` with the next CRL number, current for
    /// [`DEFAULT_VALIDITY`], and writes it to `crl.pem` (atomically:
    /// services that watch the file never read half of it).
    pub fn write_crl(&self, list: &RevocationList) -> Result<u64, PkiError> {
        self.write_crl_valid_for(list, DEFAULT_VALIDITY)
    }

    /// [`Ca::write_crl`] with the list current for `validity` (at most
    /// [`MAX_VALIDITY`]).
    pub fn write_crl_valid_for(
        &self,
        list: &RevocationList,
        validity: time::Duration,
    ) -> Result<u64, PkiError> {
        if validity <= time::Duration::ZERO || validity > MAX_VALIDITY {
            return Err(PkiError::BadCrl {
                path: Self::crl_path(self.dir()),
                source: CrlError::Validity {
                    max_days: MAX_VALIDITY.whole_days(),
                },
            });
        }
        let now = OffsetDateTime::now_utc();
        self.sign_crl(list, now, now + validity)
    }

    /// Signs the CA's current list again with the next CRL number, current
    /// for `validity` from now; returns the new number and `nextUpdate`.
    pub fn renew_crl(&self, validity: time::Duration) -> Result<(u64, OffsetDateTime), PkiError> {
        let list = self.revocation_list()?;
        let number = self.write_crl_valid_for(&list, validity)?;
        let renewed = self.revocation_list()?;
        let next = renewed.next_update.unwrap_or_else(OffsetDateTime::now_utc);
        Ok((number, next))
    }

    pub(crate) fn sign_crl(
        &self,
        list: &RevocationList,
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
    ) -> Result<u64, PkiError> {
        let number = list.number + 1;
        let params = CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: list
                .entries
                .values()
                .map(|r| RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from_slice(r.serial.as_bytes()),
                    revocation_time: r.revoked_at,
                    reason_code: r.reason_code.and_then(reason_from_code),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer)?;
        write_atomic(&Self::crl_path(self.dir()), &crl.pem()?, false)?;
        Ok(number)
    }

    /// Puts `serial` on the CA's revocation list and writes the newly
    /// signed list.
    pub fn revoke(&self, serial: &Serial, reason: Reason) -> Result<RevokeOutcome, PkiError> {
        let mut list = self.revocation_list()?;
        if let Some(existing) = list.entries.get(serial) {
            return Ok(RevokeOutcome::AlreadyRevoked(existing.clone()));
        }
        // whole seconds: that is what the CRL's time fields keep
        let now = OffsetDateTime::now_utc();
        let revoked_at = now.replace_nanosecond(0).unwrap_or(now);
        list.entries.insert(
            serial.clone(),
            Revoked {
                serial: serial.clone(),
                revoked_at,
                reason_code: Some(reason.to_rcgen() as u8),
            },
        );
        let number = self.write_crl(&list)?;
        Ok(RevokeOutcome::Revoked {
            number,
            listed: list.len(),
        })
    }

    /// The serial of a certificate this CA issued; refuses one it did not
    /// issue (whose issuer or signature is another CA's).
    pub fn serial_of_issued(&self, cert: &Path) -> Result<Serial, PkiError> {
        let bad = |source: CertError| PkiError::BadCertificate {
            path: cert.to_owned(),
            source,
        };
        let der = pem_contents(&read(cert)?).map_err(bad)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| bad(CertError::NotX509(e.to_string())))?;
        let ca_der = self.cert_der()?;
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der)
            .map_err(|e| bad(CertError::CaUnusable(e.to_string())))?;
        check_issued_by(&parsed, &ca).map_err(bad)?;
        Ok(Serial::from_der_integer(parsed.raw_serial()))
    }
}

/// Checks that `ca` issued and signed `cert`.
pub(crate) fn check_issued_by(
    cert: &X509Certificate<'_>,
    ca: &X509Certificate<'_>,
) -> Result<(), CertError> {
    if cert.issuer().as_raw() != ca.subject().as_raw() {
        return Err(CertError::OtherIssuer {
            issuer: cert.issuer().to_string(),
            ca: ca.subject().to_string(),
        });
    }
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|e| CertError::Signature(e.to_string()))
}

/// The DER contents of a PEM certificate.
pub(crate) fn pem_contents(pem: &[u8]) -> Result<Vec<u8>, CertError> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| CertError::NotPem(e.to_string()))?;
    Ok(pem.contents)
}

fn reason_from_code(code: u8) -> Option<RevocationReason> {
    Some(match code {
        0 => RevocationReason::Unspecified,
        1 => RevocationReason::KeyCompromise,
        2 => RevocationReason::CaCompromise,
        3 => RevocationReason::AffiliationChanged,
        4 => RevocationReason::Superseded,
        5 => RevocationReason::CessationOfOperation,
        6 => RevocationReason::CertificateHold,
        8 => RevocationReason::RemoveFromCrl,
        9 => RevocationReason::PrivilegeWithdrawn,
        10 => RevocationReason::AaCompromise,
        _ => return None,
    })
}

/// The name of an RFC 5280 reason code.
pub fn reason_name(code: u8) -> &'static str {
    match code {
        0 => "unspecified",
        1 => "key-compromise",
        2 => "ca-compromise",
        3 => "affiliation-changed",
        4 => "superseded",
        5 => "cessation-of-operation",
        6 => "certificate-hold",
        8 => "remove-from-crl",
        9 => "privilege-withdrawn",
        10 => "aa-compromise",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jembatan_core::{Identity, Role};

    fn broker() -> Identity {
        Identity::new(Role::Broker, None).unwrap()
    }

    #[test]
    fn serials_parse_and_print_as_hex() {
        let s = Serial::parse("00:1A:2b").unwrap();
        assert_eq!(s.to_string(), "1a2b");
        assert_eq!(Serial::parse("0x1a2b").unwrap(), s);
        assert_eq!(Serial::parse("a2b").unwrap().to_string(), "0a2b");
        assert_eq!(Serial::parse(""), Err(BadSerial(String::new())));
        assert_eq!(
            Serial::parse("xyz").unwrap_err().to_string(),
            "\"xyz\" is not a certificate serial number (hex)"
        );
    }

    #[test]
    fn revoking_signs_a_growing_list_the_ca_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(dir.path(), "test CA").unwrap();
        let a = ca.issue_to(&broker(), &[], 1, "a").unwrap();
        let b = ca.issue_to(&broker(), &[], 1, "b").unwrap();
        let sa = ca.serial_of_issued(&a.cert).unwrap();
        let sb = ca.serial_of_issued(&b.cert).unwrap();
        assert_ne!(sa, sb);

        assert_eq!(
            ca.revoke(&sa, Reason::KeyCompromise).unwrap(),
            RevokeOutcome::Revoked {
                number: 1,
                listed: 1
            }
        );
        assert!(matches!(
            ca.revoke(&sa, Reason::Superseded).unwrap(),
            RevokeOutcome::AlreadyRevoked(_)
        ));
        assert_eq!(
            ca.revoke(&sb, Reason::Superseded).unwrap(),
            RevokeOutcome::Revoked {
                number: 2,
                listed: 2
            }
        );
        let list =
            RevocationList::load(&Ca::crl_path(dir.path()), &ca.cert_der().unwrap()).unwrap();
        assert_eq!(list.number, 2);
        assert!(list.is_revoked(&sa) && list.is_revoked(&sb));
        assert_eq!(list.entries[&sa].reason_code, Some(1));
        assert_eq!(list.entries[&sb].reason_code, Some(4));
    }

    #[test]
    fn lists_carry_their_next_update_and_renewal_moves_it() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(dir.path(), "test CA").unwrap();
        let now = OffsetDateTime::now_utc();
        let hour = time::Duration::hours(1);
        ca.sign_crl(&RevocationList::default(), now - 2 * hour, now - hour)
            .unwrap();
        let list = ca.revocation_list().unwrap();
        assert_eq!(list.number, 1);
        let next = list.next_update.unwrap();
        assert_eq!(list.expired(now), Some(next));
        assert!((next - (now - hour)).abs() < time::Duration::seconds(2));
        assert_eq!(list.expired(now - 2 * hour), None);

        let (number, next) = ca.renew_crl(time::Duration::days(7)).unwrap();
        assert_eq!(number, 2);
        let list = ca.revocation_list().unwrap();
        assert_eq!(list.next_update, Some(next));
        assert_eq!(list.expired(now), None);
        assert!(next > now + time::Duration::days(6));
        // out-of-range validities are refused
        for days in [0, -1, 367] {
            assert!(ca.renew_crl(time::Duration::days(days)).is_err(), "{days}");
        }
    }

    #[test]
    fn a_list_from_another_ca_or_altered_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(&dir.path().join("ca"), "test CA").unwrap();
        let other = Ca::create(&dir.path().join("other"), "test CA").unwrap();
        let issued = other.issue_to(&broker(), &[], 1, "x").unwrap();
        let serial = other.serial_of_issued(&issued.cert).unwrap();
        other.revoke(&serial, Reason::Unspecified).unwrap();
        let foreign = std::fs::read(Ca::crl_path(other.dir())).unwrap();
        // same name, other key: the signature gives it away
        let err = RevocationList::from_pem(&foreign, &ca.cert_der().unwrap()).unwrap_err();
        assert!(matches!(err, CrlError::Signature(_)), "{err}");
        // a certificate is not a list
        let err = RevocationList::from_pem(ca.cert_pem().as_bytes(), &ca.cert_der().unwrap())
            .unwrap_err();
        assert_eq!(err, CrlError::OtherLabel("CERTIFICATE".into()));
        assert!(err.to_string().contains("X509 CRL"), "{err}");
        // the other CA's certificate is refused by this CA
        let err = ca.serial_of_issued(&issued.cert).unwrap_err();
        assert!(
            matches!(
                err,
                PkiError::BadCertificate {
                    source: CertError::Signature(_),
                    ..
                }
            ),
            "{err}"
        );
    }
}
