//! How a command failed, which decides its exit code: 1 when the command
//! ran and the answer is "no" (a log that does not verify, an incompatible
//! schema, a refused request, a failing record), 2 for usage errors,
//! unreadable input and unreachable stores or brokers.

use std::process::ExitCode;

use anyhow::anyhow;

pub(crate) enum Failure {
    /// The answer is "no" (exit 1).
    Refused(anyhow::Error),
    /// Usage errors, unreadable files, unreachable services (exit 2).
    Usage(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure::Usage(err)
    }
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Self {
        Failure::Usage(anyhow!("i/o error: {err}"))
    }
}

/// Why the broker refused this caller's certificate in the TLS
/// handshake, when `err` (or an error it wraps) is the TLS alert that
/// says so. Such a refusal otherwise reaches a client only as "transport
/// error".
pub(crate) fn certificate_refusal(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::AlertDescription as Alert;
    let mut next = Some(err);
    while let Some(e) = next {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            // io::Error's source() skips the error it wraps
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::AlertReceived(alert)) = tls {
            let why = match alert {
                Alert::UnknownCA => "it is not issued by the CA the broker trusts",
                Alert::CertificateRevoked => "it has been revoked",
                Alert::CertificateExpired => "it has expired or is not valid yet",
                Alert::CertificateRequired => "no certificate was sent",
                Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateUnknown
                | Alert::AccessDenied => "it is not acceptable to the broker",
                _ => return None,
            };
            return Some(format!(
                "the broker refused this certificate: {why} (TLS alert {alert:?}); \
                 check --cert and --key, or ask the broker's operator, whose log names the reason"
            ));
        }
        next = e.source();
    }
    None
}

/// Prints the error and turns the outcome into the exit code.
pub(crate) fn exit(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(err)) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(err)) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}
