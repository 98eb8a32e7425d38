//! Starting the console: its state, the routes, the headers every
//! response carries, and the HTTP server on its loopback address.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post};
use jembatan_core::Role;
use tokio::net::TcpListener;

use crate::auth::{Auth, random_token};
use crate::broker::Broker;
use crate::{ConsoleConfig, ConsoleError, pages, registry, templates, verify};

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) broker: Broker,
    pub(crate) auth: Auth,
    pub(crate) templates: minijinja::Environment<'static>,
    pub(crate) names: BTreeMap<String, String>,
    /// The broker's audit HMAC key, for subject lookups.
    pub(crate) audit_key: Option<Vec<u8>>,
    /// The checkpoint verifier key, as its text.
    pub(crate) verifier_key: Option<String>,
    /// The session and login cookies' names, with the console's port.
    pub(crate) session_cookie: String,
    pub(crate) login_cookie: String,
    /// The latest whole-log verification, while the console runs.
    pub(crate) verify: std::sync::Mutex<Option<Arc<std::sync::Mutex<crate::verify::Progress>>>>,
}

impl State {
    pub(crate) fn role(&self) -> Role {
        self.broker.role()
    }
}

/// A console ready to serve.
#[derive(Debug)]
pub struct Console {
    state: Arc<State>,
    token: String,
}

impl Console {
    /// Checks the certificate's role, reads the keys, connects to the
    /// broker and makes the one-time login token.
    pub async fn start(config: &ConsoleConfig) -> Result<Console, ConsoleError> {
        let broker = Broker::connect(&config.broker, &config.tls).await?;
        let audit_key = config
            .audit_key
            .as_ref()
            .map(|path| {
                jembatan_broker::read_audit_key(path).map_err(|e| ConsoleError::Key {
                    what: "audit key",
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
            })
            .transpose()?;
        let verifier_key = config
            .checkpoint_key
            .as_ref()
            .map(|path| {
                let text = std::fs::read_to_string(path).map_err(|e| ConsoleError::Key {
                    what: "checkpoint key",
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
                let text = text.trim().to_owned();
                jembatan_tlog::note::Verifier::from_key_string(&text).map_err(|e| {
                    ConsoleError::Key {
                        what: "checkpoint key",
                        path: path.display().to_string(),
                        message: e.to_string(),
                    }
                })?;
                Ok::<_, ConsoleError>(text)
            })
            .transpose()?;
        let token = random_token();
        let auth = Auth::new(
            token.clone(),
            config.users.clone(),
            Duration::from_secs(config.session_minutes * 60),
        );
        let templates =
            templates::environment().map_err(|e| ConsoleError::Templates(e.to_string()))?;
        let state = Arc::new(State {
            broker,
            auth,
            templates,
            names: config.agencies.clone(),
            audit_key,
            verifier_key,
            session_cookie: format!("{}_{}", crate::auth::SESSION_COOKIE, config.listen.port()),
            login_cookie: format!("{}_{}", crate::auth::LOGIN_COOKIE, config.listen.port()),
            verify: std::sync::Mutex::new(None),
        });
        Ok(Console { state, token })
    }

    /// The one-time login token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The role of the console's certificate.
    pub fn role(&self) -> Role {
        self.state.role()
    }

    /// The routes, for serving or for calling in tests.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ConsoleError> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(ConsoleError::Serve)
    }
}

/// The console's routes over `state`.
pub(crate) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/login", get(pages::login_form).post(pages::login))
        .route("/logout", post(pages::logout))
        .route("/lang", get(pages::set_lang))
        .route("/exchanges", get(pages::exchanges))
        .route("/exchanges/export", get(pages::export))
        .route("/entries/{seq}", get(pages::entry))
        .route("/entries/{seq}/proof.json", get(pages::proof_json))
        .route("/who", get(pages::who_form).post(pages::who))
        .route("/agreements", get(pages::agreements))
        .route("/agreements/{id}", get(pages::agreement))
        .route("/agreements/{id}/{action}", post(pages::agreement_step))
        .route("/propose", get(pages::propose_form).post(pages::propose))
        .route("/verify", get(verify::page).post(verify::start))
        .route("/registry", get(registry::datasets))
        .route("/registry/{dataset}", get(registry::dataset))
        .route("/registry/{dataset}/check", post(registry::check))
        .route("/assets/{name}", get(pages::asset))
        .fallback(pages::not_found)
        .with_state(state)
        .layer(axum::middleware::map_response(security_headers))
}

/// Headers on every response: scripts and styles from the console only,
/// no framing, no referrer to other sites (a same-origin one keeps the
/// `Origin` header that forms are checked by), nothing cached but the assets.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
