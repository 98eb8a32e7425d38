//! How a command failed, which decides its exit code: 1 when the command
//! ran and the answer is "no" (a log that does not verify, an incompatible
//! schema, a refused request, a failing record), 2 for usage errors,
//! unreadable input and unreachable stores or brokers, 3 when an exchange
//! is denied by policy (`query`, `lookup`).

use std::process::ExitCode;

#[derive(Debug)]
pub(crate) enum Failure {
    /// The answer is "no" (exit 1).
    Refused(anyhow::Error),
    /// Usage errors, unreadable files, unreachable services (exit 2).
    Usage(anyhow::Error),
    /// An exchange denied by policy, with its reasons (exit 3).
    Denied(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Failure::Usage(err)
    }
}

impl From<std::io::Error> for Failure {
    fn from(err: std::io::Error) -> Self {
        // kept as the source, so that a closed pipe is recognised
        Failure::Usage(anyhow::Error::new(err).context("i/o error"))
    }
}

/// Whether `err` is a write to a pipe whose reader has gone (`| head`):
/// the command's output was cut short on purpose, which is no failure.
pub(crate) fn closed_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The TLS alerts by which a server refuses a client's certificate, and
/// what each says about it.
const CERTIFICATE_ALERTS: [(rustls::AlertDescription, &str); 8] = {
    use rustls::AlertDescription as Alert;
    [
        (
            Alert::UnknownCA,
            "it is not issued by the CA the broker trusts",
        ),
        (Alert::CertificateRevoked, "it has been revoked"),
        (
            Alert::CertificateExpired,
            "it has expired or is not valid yet",
        ),
        (Alert::CertificateRequired, "no certificate was sent"),
        (Alert::BadCertificate, "it is not acceptable to the broker"),
        (
            Alert::UnsupportedCertificate,
            "it is not acceptable to the broker",
        ),
        (
            Alert::CertificateUnknown,
            "it is not acceptable to the broker",
        ),
        (Alert::AccessDenied, "it is not acceptable to the broker"),
    ]
};

/// Why the broker refused this caller's certificate in the TLS
/// handshake, when `err` (or an error it wraps) is the TLS alert that
/// says so. Such a refusal otherwise reaches a client only as "transport
/// error".
pub(crate) fn certificate_refusal(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let alert = received_alert(err).or_else(probe)?;
    let (_, why) = CERTIFICATE_ALERTS.iter().find(|(a, _)| *a == alert)?;
    Some(format!(
        "the broker refused this certificate: {why} (TLS alert {alert:?}); \
         check --cert and --key, or ask the broker's operator, whose log names the reason"
    ))
}

/// The broker this command talks to and the certificate it presents,
/// for [`probe`].
static BROKER: std::sync::OnceLock<(jembatan_pki::TlsFiles, String, u16)> =
    std::sync::OnceLock::new();

/// Remembers the broker and certificate of this command.
pub(crate) fn set_broker(files: &jembatan_pki::TlsFiles, host: &str, port: u16) {
    let _ = BROKER.set((files.clone(), host.to_owned(), port));
}

/// Asks the broker again, in a handshake of our own, whether it refuses
/// this command's certificate: a failed call often keeps only "transport
/// error" or "operation was canceled".
fn probe() -> Option<rustls::AlertDescription> {
    let (files, host, port) = BROKER.get()?;
    jembatan_pki::refused_by(files, host, *port)
}

/// The TLS alert the peer sent, found in `err`'s chain.
fn received_alert(err: &(dyn std::error::Error + 'static)) -> Option<rustls::AlertDescription> {
    let mut next = Some(err);
    while let Some(e) = next {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            // io::Error's source() skips the error it wraps
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::AlertReceived(alert)) = tls {
            return Some(*alert);
        }
        next = e.source();
    }
    // HTTP/2 keeps only the text of the I/O error that ended a connection
    // (rustls's "received fatal alert: UnknownCA"), not the error itself
    let text = format!("{err:?}");
    CERTIFICATE_ALERTS.iter().map(|(a, _)| *a).find(|alert| {
        text.contains(&format!("received fatal alert: {alert:?}"))
            || text.contains(&format!("AlertReceived({alert:?})"))
    })
}

/// Prints the error and turns the outcome into the exit code.
pub(crate) fn exit(result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(err) | Failure::Usage(err) | Failure::Denied(err))
            if closed_pipe(&err) =>
        {
            ExitCode::SUCCESS
        }
        Err(Failure::Refused(err)) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(err)) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
        Err(Failure::Denied(err)) => {
            eprintln!("{err:#}");
            ExitCode::from(3)
        }
    }
}
