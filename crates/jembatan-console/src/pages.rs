//! The page handlers: login, overview, exchanges and their export, an
//! entry with its proof, "who accessed this person?", agreements and
//! their approval or revocation. Each reads the session cookie first
//! (no session: to the login page), each POST checks its CSRF token.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::{FromRequestParts, Path, Query, State as AxumState};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Duration as ChronoDuration, Timelike, Utc};
use jembatan_core::Role;
use jembatan_proto::v1 as pb;
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::auth::{LANG_COOKIE, Session, cookie, random_token, same_secret, set_cookie};
use crate::entries::{EntryView, agency_name};
use crate::i18n::{Lang, fill};
use crate::proof::ProofJson;
use crate::server::State;
use crate::templates::ASSETS;

type Shared = Arc<State>;

/// Per provider, per consumer: the (id, status) of their agreements.
type Matrix = Vec<(String, Vec<Vec<(String, String)>>)>;

/// Most entries an export or a scan reads.
const EXPORT_CAP: usize = 100_000;
/// Most entries the overview reads.
const OVERVIEW_CAP: usize = 20_000;
/// Entries per page on the exchanges page.
const PAGE_SIZE: u32 = 50;

/// What a handler knows of the request before it starts.
pub(crate) struct Ctx {
    lang: Lang,
    session: Option<(String, Session)>,
    path: String,
    /// Whether a POST's Origin (when sent) is this console.
    same_origin: bool,
    login_cookie: Option<String>,
}

impl FromRequestParts<Shared> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Shared,
    ) -> Result<Self, Self::Rejection> {
        let header = |name: header::HeaderName| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let cookies = header(header::COOKIE).unwrap_or_default();
        let lang = Lang::negotiate(
            cookie(&cookies, LANG_COOKIE),
            header(header::ACCEPT_LANGUAGE).as_deref(),
        );
        let session = cookie(&cookies, &state.session_cookie)
            .and_then(|id| state.auth.session(id).map(|s| (id.to_owned(), s)));
        let same_origin = match (header(header::ORIGIN), header(header::HOST)) {
            (None, _) => true,
            (Some(origin), Some(host)) => {
                origin == format!("http://{host}") || origin == format!("https://{host}")
            }
            (Some(_), None) => false,
        };
        Ok(Ctx {
            lang,
            session,
            path: parts
                .uri
                .path_and_query()
                .map_or("/".to_owned(), |p| p.as_str().to_owned()),
            same_origin,
            login_cookie: cookie(&cookies, &state.login_cookie).map(str::to_owned),
        })
    }
}

/// A page that could not be served, as the page that says why.
pub(crate) struct Refusal {
    status: StatusCode,
    message: String,
    lang: Lang,
    state: Shared,
    session: Option<Session>,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let t = self.lang.strings();
        let body = render(
            &self.state,
            "message.html",
            self.lang,
            self.session.as_ref(),
            "",
            context! { title => t.get("error_title"), message => self.message },
        );
        (self.status, body).into_response()
    }
}

impl Ctx {
    pub(crate) fn lang(&self) -> Lang {
        self.lang
    }

    /// The session, or a redirect to the login page.
    pub(crate) fn require(&self) -> Result<&Session, Redirect> {
        match &self.session {
            Some((_, s)) => Ok(s),
            None => Err(Redirect::to(&format!("/login?next={}", encode(&self.path)))),
        }
    }

    pub(crate) fn refusal(&self, state: &Shared, status: StatusCode, message: String) -> Refusal {
        Refusal {
            status,
            message,
            lang: self.lang,
            state: state.clone(),
            session: self.session.as_ref().map(|(_, s)| s.clone()),
        }
    }

    /// The broker's refusal, in its own words.
    pub(crate) fn broker_refused(&self, state: &Shared, status: &tonic::Status) -> Refusal {
        let code = match status.code() {
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::BAD_GATEWAY,
        };
        tracing::warn!(code = ?status.code(), message = status.message(), "broker refused a console call");
        let message = fill(self.lang, "broker_said", &[("message", status.message())]);
        self.refusal(state, code, message)
    }

    /// Refuses a POST whose CSRF token is not the session's, or that
    /// comes from another origin.
    pub(crate) fn check_csrf(
        &self,
        state: &Shared,
        session: &Session,
        given: &str,
    ) -> Result<(), Refusal> {
        if self.same_origin && same_secret(&session.csrf, given) {
            return Ok(());
        }
        tracing::warn!(user = %session.user, "form refused: bad csrf token or origin");
        Err(self.refusal(
            state,
            StatusCode::FORBIDDEN,
            fill(self.lang, "csrf_refused", &[]),
        ))
    }

    /// Refuses what only an auditor certificate can read.
    /// The session of a request that may go on: signed in (else the login
    /// page), a form's CSRF token and origin right when `csrf` is given,
    /// and an auditor's console when `who` says so; otherwise the answer.
    pub(crate) fn admit(
        &self,
        state: &Shared,
        csrf: Option<&str>,
        who: Needs,
    ) -> Result<Session, Box<Response>> {
        let answer = |r: Response| Box::new(r);
        let session = self
            .require()
            .map_err(|r| answer(r.into_response()))?
            .clone();
        if let Some(given) = csrf {
            self.check_csrf(state, &session, given)
                .map_err(|r| answer(r.into_response()))?;
        }
        if who == Needs::Auditor {
            self.need_auditor(state)
                .map_err(|r| answer(r.into_response()))?;
        }
        Ok(session)
    }

    pub(crate) fn need_auditor(&self, state: &Shared) -> Result<(), Refusal> {
        if state.role() == Role::Auditor {
            return Ok(());
        }
        Err(self.refusal(
            state,
            StatusCode::FORBIDDEN,
            fill(self.lang, "needs_auditor", &[]),
        ))
    }
}

/// Who a page is for, beyond a signed-in user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Needs {
    /// Any signed-in user of this console.
    Anyone,
    /// Only a console with an auditor's certificate (it reads the log).
    Auditor,
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path on this console to go back to: local, never `//host`.
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.to_owned(),
        _ => "/".to_owned(),
    }
}

/// Renders a page; a template fault becomes a short error page (and a log line).
pub(crate) fn render(
    state: &State,
    name: &str,
    lang: Lang,
    session: Option<&Session>,
    nav: &str,
    page: minijinja::Value,
) -> Response {
    let base = context! {
        t => lang.strings(),
        lang => lang.code(),
        other_lang => if lang == Lang::Id { "en" } else { "id" },
        user => session.map(|s| s.user.clone()),
        csrf => session.map(|s| s.csrf.clone()),
        role => state.role().to_string(),
        auditor => state.role() == Role::Auditor,
        operator => state.role() == Role::Operator,
        nav => nav,
        broker => state.broker.address().to_string(),
    };
    let ctx = context! { ..page, ..base };
    match state
        .templates
        .get_template(name)
        .and_then(|t| t.render(ctx))
    {
        Ok(html) => ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response(),
        Err(err) => {
            tracing::error!(template = name, error = %err, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "template error").into_response()
        }
    }
}

// ---------------------------------------------------------------- login

#[derive(Debug, Deserialize)]
pub(crate) struct NextQuery {
    next: Option<String>,
    token: Option<String>,
}

pub(crate) async fn login_form(
    AxumState(state): AxumState<Shared>,
    ctx: Ctx,
    Query(q): Query<NextQuery>,
) -> Response {
    let next = local_path(q.next.as_deref());
    // the URL printed at start carries the token: log in at once
    if let Some(token) = q.token {
        return match state.auth.login_with_token(&token) {
            Ok((id, session)) => logged_in(&state, &id, &session, &next),
            Err(_) => {
                tracing::warn!("login refused: wrong or used token");
                login_page(&state, &ctx, &next, true, StatusCode::UNAUTHORIZED)
            }
        };
    }
    login_page(&state, &ctx, &next, false, StatusCode::OK)
}

fn login_page(
    state: &Shared,
    ctx: &Ctx,
    next: &str,
    refused: bool,
    status: StatusCode,
) -> Response {
    let csrf = random_token();
    let mut response = render(
        state,
        "login.html",
        ctx.lang,
        None,
        "login",
        context! {
            next => next,
            login_csrf => csrf,
            refused => refused,
            token_unused => state.auth.token_unused(),
        },
    );
    *response.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&set_cookie(&state.login_cookie, &csrf, None)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

fn logged_in(state: &State, id: &str, session: &Session, next: &str) -> Response {
    tracing::info!(user = %session.user, "console login");
    let mut response = Redirect::to(next).into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(&state.session_cookie, id, None)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[derive(Debug, Deserialize)]
pub(crate) struct LoginForm {
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

pub(crate) async fn login(
    AxumState(state): AxumState<Shared>,
    ctx: Ctx,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = local_path(Some(&form.next));
    let csrf_ok = ctx.same_origin
        && ctx
            .login_cookie
            .as_deref()
            .is_some_and(|c| same_secret(c, &form.csrf));
    if !csrf_ok {
        tracing::warn!("login refused: bad csrf token or origin");
        return ctx
            .refusal(
                &state,
                StatusCode::FORBIDDEN,
                fill(ctx.lang, "csrf_refused", &[]),
            )
            .into_response();
    }
    let result = if !form.token.is_empty() {
        state.auth.login_with_token(&form.token)
    } else {
        state.auth.login_with_password(&form.name, &form.password)
    };
    match result {
        Ok((id, session)) => logged_in(&state, &id, &session, &next),
        Err(why) => {
            tracing::warn!(?why, "login refused");
            login_page(&state, &ctx, &next, true, StatusCode::UNAUTHORIZED)
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct CsrfForm {
    csrf: String,
}

pub(crate) async fn logout(
    AxumState(state): AxumState<Shared>,
    ctx: Ctx,
    Form(form): Form<CsrfForm>,
) -> Response {
    let Some((id, session)) = &ctx.session else {
        return Redirect::to("/login").into_response();
    };
    if let Err(r) = ctx.check_csrf(&state, session, &form.csrf) {
        return r.into_response();
    }
    state.auth.logout(id);
    let mut response = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&set_cookie(
        &state.session_cookie,
        "",
        Some(std::time::Duration::ZERO),
    )) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

#[derive(Debug, Deserialize)]
pub(crate) struct LangQuery {
    to: String,
    back: Option<String>,
}

/// The language switch: a cookie, then back to the page it was clicked
/// on (the same-origin `Referer`), else to `back`.
pub(crate) async fn set_lang(
    headers: axum::http::HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let from_referer = match (header(header::REFERER), header(header::HOST)) {
        (Some(referer), Some(host)) => referer
            .strip_prefix("http://")
            .or_else(|| referer.strip_prefix("https://"))
            .and_then(|rest| rest.strip_prefix(host))
            .filter(|path| path.starts_with('/'))
            .map(str::to_owned),
        _ => None,
    };
    let back = local_path(from_referer.as_deref().or(q.back.as_deref()));
    let mut response = Redirect::to(&back).into_response();
    if let Some(lang) = Lang::parse(&q.to)
        && let Ok(v) = HeaderValue::from_str(&set_cookie(
            LANG_COOKIE,
            lang.code(),
            Some(std::time::Duration::from_secs(365 * 24 * 3600)),
        ))
    {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, body)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

pub(crate) async fn not_found(AxumState(state): AxumState<Shared>, ctx: Ctx) -> Response {
    ctx.refusal(
        &state,
        StatusCode::NOT_FOUND,
        fill(ctx.lang, "not_found", &[]),
    )
    .into_response()
}

// ------------------------------------------------------------- exchanges

/// The exchanges page's filters, as the form sends them.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub(crate) struct EntryFilter {
    #[serde(default)]
    agency: String,
    #[serde(default)]
    dataset: String,
    #[serde(default)]
    purpose: String,
    #[serde(default)]
    decision: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    exchange: String,
    #[serde(default)]
    page: String,
    #[serde(default)]
    format: String,
}

/// A time from a form: RFC 3339, a date, or a `datetime-local` value
/// (taken as UTC).
fn form_time(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    jembatan_core::agreement::parse_instant(text)
        .ok()
        .or_else(|| jembatan_core::agreement::parse_instant(&format!("{text}:00Z")).ok())
}

fn from_timestamp(t: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}

/// How long ago, in the reader's words: seconds, minutes, hours or days.
fn age_words(lang: Lang, age: ChronoDuration) -> String {
    let s = age.num_seconds().max(0);
    match s {
        0..120 => fill(lang, "age_seconds", &[("n", &s.to_string())]),
        120..7200 => fill(lang, "age_minutes", &[("n", &(s / 60).to_string())]),
        7200..172_800 => fill(lang, "age_hours", &[("n", &(s / 3600).to_string())]),
        _ => fill(lang, "age_days", &[("n", &(s / 86_400).to_string())]),
    }
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

/// The time in a UUIDv7 exchange id (its first 48 bits, milliseconds).
fn uuid7_time(id: &str) -> Option<DateTime<Utc>> {
    let hex: String = id.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || hex.as_bytes().get(12) != Some(&b'7') {
        return None;
    }
    let ms = i64::from_str_radix(hex.get(..12)?, 16).ok()?;
    DateTime::from_timestamp_millis(ms)
}

impl EntryFilter {
    /// The gRPC request, or the reader's fault in words.
    fn request(&self, lang: Lang) -> Result<pb::QueryEntriesRequest, String> {
        let time = |field: &str, text: &str| -> Result<Option<prost_types::Timestamp>, String> {
            if text.trim().is_empty() {
                return Ok(None);
            }
            form_time(text)
                .map(|t| Some(timestamp(t)))
                .ok_or_else(|| fill(lang, "bad_time", &[("field", field), ("value", text)]))
        };
        let mut from = time("from", &self.from)?;
        if !self.exchange.trim().is_empty() {
            let t = uuid7_time(self.exchange.trim())
                .ok_or_else(|| fill(lang, "bad_exchange_id", &[]))?;
            if from.is_none() {
                from = Some(timestamp(t - ChronoDuration::minutes(1)));
            }
        }
        Ok(pb::QueryEntriesRequest {
            agency: self.agency.trim().to_owned(),
            dataset: self.dataset.trim().to_owned(),
            purpose: self.purpose.trim().to_owned(),
            decision: self.decision.clone(),
            status: self.status.clone(),
            from,
            until: time("until", &self.until)?,
            page_size: PAGE_SIZE,
            page_token: self.page.clone(),
        })
    }

    /// This filter as a query string, with another page token.
    fn query_string(&self, page: &str) -> String {
        let mut f = self.clone();
        f.page = page.to_owned();
        f.format.clear();
        serde_urlencoded_like(&f)
    }
}

fn serde_urlencoded_like(f: &EntryFilter) -> String {
    let pairs = [
        ("agency", &f.agency),
        ("dataset", &f.dataset),
        ("purpose", &f.purpose),
        ("decision", &f.decision),
        ("status", &f.status),
        ("from", &f.from),
        ("until", &f.until),
        ("exchange", &f.exchange),
        ("page", &f.page),
    ];
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v).replace('/', "%2F")))
        .collect::<Vec<_>>()
        .join("&")
}

fn views(state: &State, lang: Lang, entries: &[pb::AuditEntry]) -> Vec<EntryView> {
    entries
        .iter()
        .filter_map(|e| EntryView::parse(e.seq, &e.canonical, &e.entry_sha256, lang, &state.names))
        .collect()
}

pub(crate) async fn exchanges(
    AxumState(state): AxumState<Shared>,
    ctx: Ctx,
    Query(filter): Query<EntryFilter>,
) -> Response {
    let session = match ctx.admit(&state, None, Needs::Auditor) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let mut fault = None;
    let mut rows = Vec::new();
    let mut next = String::new();
    match filter.request(ctx.lang) {
        Err(e) => fault = Some(e),
        Ok(request) => {
            let exchange = filter.exchange.trim().to_owned();
            let result = if exchange.is_empty() {
                state.broker.entries(request).await.inspect(|page| {
                    next = page
                        .last()
                        .map(|e| e.next_page_token.clone())
                        .unwrap_or_default();
                })
            } else {
                // no exchange filter in the Audit service: read from the
                // exchange's own time on and keep its entries
                state
                    .broker
                    .all_entries(request, EXPORT_CAP)
                    .await
                    .map(|(all, _)| {
                        all.into_iter()
                            .filter(|e| {
                                EntryView::parse(e.seq, &e.canonical, "", ctx.lang, &state.names)
                                    .is_some_and(|v| v.exchange_id == exchange)
                            })
                            .collect()
                    })
            };
            match result {
                Ok(page) => rows = views(&state, ctx.lang, &page),
                Err(status) => return ctx.broker_refused(&state, &status).into_response(),
            }
        }
    }
    let next_link =
        (!next.is_empty()).then(|| format!("/exchanges?{}", filter.query_string(&next)));
    let export = filter.query_string("");
    render(
        &state,
        "exchanges.html",
        ctx.lang,
        Some(&session),
        "exchanges",
        context! {
            filter => &filter,
            rows => rows,
            fault => fault,
            next_link => next_link,
            first_link => (!filter.page.is_empty()).then(|| format!("/exchanges?{}", filter.query_string(""))),
            export_query => export,
            decisions => ["allow", "deny"],
            statuses => ["started", "denied", "invalid", "ok", "failed", "cancelled", "stopped", "abandoned"],
        },
    )
}

/// One CSV field: quoted when needed, and a leading formula character
/// neutralized so a spreadsheet shows it as text.
fn csv_field(value: &str) -> String {
    let value = if value.starts_with(['=', '+', '-', '@']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value
    }
}

pub(crate) async fn export(
    AxumState(state): AxumState<Shared>,
    ctx: Ctx,
    Query(filter): Query<EntryFilter>,
) -> Response {
    if let Err(r) = ctx.admit(&state, None, Needs::Auditor) {
        return *r;
    }
    let request = match filter.request(ctx.lang) {
        Ok(mut r) => {
            r.page_token.clear();
            r
        }
        Err(e) => {
            return ctx
                .refusal(&state, StatusCode::BAD_REQUEST, e)
                .into_response();
        }
    };
    let (entries, _more) = match state.broker.all_entries(request, EXPORT_CAP).await {
        Ok(found) => found,
        Err(status) => return ctx.broker_refused(&state, &status).into_response(),
    };
    let exchange = filter.exchange.trim();
    let rows: Vec<(pb::AuditEntry, EntryView)> = entries
        .into_iter()
        .filter_map(|e| {
            let v = EntryView::parse(e.seq, &e.canonical, &e.entry_sha256, ctx.lang, &state.names)?;
            (exchange.is_empty() || v.exchange_id == exchange).then_some((e, v))
        })
        .collect();
    let (body, kind, ext) = if filter.format == "jsonl" {
        let mut out = String::new();
        for (e, _) in &rows {
            let entry: serde_json::Value =
                serde_json::from_slice(&e.canonical).unwrap_or(serde_json::Value::Null);
            let line =
                serde_json::json!({"seq": e.seq, "entry_sha256": e.entry_sha256, "entry": entry});
            out.push_str(&line.to_string());
            out.push('\n');
        }
        (out, "application/x-ndjson", "jsonl")
    } else {
        let mut out = String::from(
            "seq,time,kind,operation,consumer,provider,dataset,purpose,decision,status,rows,agreement_id,reasons,exchange_id,entry_sha256\n",
        );
        for (_, v) in &rows {
            let reasons = v
                .reasons
                .iter()
                .map(|r| r.code.as_str())
                .collect::<Vec<_>>()
                .join(" ");
            let fields = [
                v.seq.to_string(),
                v.time.clone(),
                v.kind.clone(),
                v.operation.clone(),
                v.consumer.clone(),
                v.provider.clone(),
                v.dataset.clone(),
                v.purpose.clone(),
                v.decision.clone(),
                v.status.clone(),
                v.rows.to_string(),
                v.agreement_id.clone(),
                reasons,
                v.exchange_id.clone(),
                v.entry_sha256.clone(),
            ];
            out.push_str(
                &fields
                    .iter()
                    .map(|f| csv_field(f))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            out.push('\n');
        }
        (out, "text/csv; charset=utf-8", "csv")
    };
    (
        [
            (header::CONTENT_TYPE, kind.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"jembatan-audit.{ext}\""),
            ),
        ],
        body,
    )
        .into_response()
}

// ----------------------------------------------------------------- entry

async fn proof_of(state: &State, entry: &pb::AuditEntry) -> Result<ProofJson, tonic::Status> {
    let proof = state
        .broker
        .audit()
        .inclusion_proof(pb::InclusionProofRequest {
            index: entry.seq,
            tree_size: 0,
        })
        .await?
        .into_inner();
    if !ProofJson::holds(entry, &proof) {
        return Err(tonic::Status::data_loss(
            "the broker's proof does not lead from this entry to its checkpoint's root",
        ));
    }
    Ok(ProofJson::new(entry, &proof, state.verifier_key.as_deref()))
}

pub(crate) async fn entry(
    AxumState(state): AxumState<Shared>,
    ctx: Ctx,
    Path(seq): Path<u64>,
) -> Response {
    let session = match ctx.admit(&state, None, Needs::Auditor) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let found = match state.broker.entry(seq).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return ctx
                .refusal(
                    &state,
                    StatusCode::NOT_FOUND,
                    fill(ctx.lang, "no_entry", &[]),
                )
                .into_response();
        }
        Err(status) => return ctx.broker_refused(&state, &status).into_response(),
    };
    let view = EntryView::parse(
        found.seq,
        &found.canonical,
        &found.entry_sha256,
        ctx.lang,
        &state.names,
    );
    let raw = String::from_utf8_lossy(&found.canonical).into_owned();
    let (proof, proof_missing) = match proof_of(&state, &found).await {
        Ok(p) => (serde_json::to_string_pretty(&p).ok(), None),
        Err(status) => (None, Some(status.message().to_owned())),
    };
    render(
        &state,
        "entry.html",
        ctx.lang,
        Some(&session),
        "exchanges",
        context! {
            seq => seq,
            entry => view,
            raw => raw,
            proof => proof,
            proof_missing => proof_missing,
            verifier_key => state.verifier_key.clone(),
        },
    )
}

pub(crate) async fn proof_json(
    AxumState(state): AxumState<Shared>,
    ctx: Ctx,
    Path(seq): Path<u64>,
) -> Response {
    if let Err(r) = ctx.require() {
        return r.into_response();
    }
    if state.role() != Role::Auditor {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({"error": fill(ctx.lang, "needs_auditor", &[])})),
        )
            .into_response();
    }
    let found = match state.broker.entry(seq).await {
        Ok(Some(e)) => e,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({"error": fill(ctx.lang, "no_entry", &[])})),
            )
                .into_response();
        }
        Err(status) => {
            return (
                StatusCode::BAD_GATEWAY,
                axum::Json(serde_json::json!({"error": status.message()})),
            )
                .into_response();
        }
    };
    match proof_of(&state, &found).await {
        Ok(p) => axum::Json(p).into_response(),
        Err(status) => (
            StatusCode::CONFLICT,
            axum::Json(serde_json::json!({"error": status.message()})),
        )
            .into_response(),
    }
}

// ------------------------------------------------------- who accessed

async fn datasets(state: &State) -> Vec<String> {
    match state
        .broker
        .registry()
        .list_datasets(pb::ListDatasetsRequest {})
        .await
    {
        Ok(r) => r
            .into_inner()
            .datasets
            .into_iter()
            .map(|d| d.dataset)
            .collect(),
        Err(status) => {
            tracing::warn!(message = status.message(), "cannot list datasets");
            Vec::new()
        }
    }
}

pub(crate) async fn who_form(AxumState(state): AxumState<Shared>, ctx: Ctx) -> Response {
    let session = match ctx.admit(&state, None, Needs::Auditor) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let datasets = datasets(&state).await;
    render(
        &state,
        "who.html",
        ctx.lang,
        Some(&session),
        "who",
        context! {
            datasets => datasets,
            chosen => "disdukcapil.penduduk",
            searched => false,
            no_key => state.audit_key.is_none(),
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct WhoForm {
    csrf: String,
    dataset: String,
    /// The subject's key (a NIK): hashed at once, never kept or logged.
    key: String,
}

impl std::fmt::Debug for WhoForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhoForm")
            .field("dataset", &self.dataset)
            .finish_non_exhaustive()
    }
}

pub(crate) async fn who(
    AxumState(state): AxumState<Shared>,
    ctx: Ctx,
    Form(form): Form<WhoForm>,
) -> Response {
    let session = match ctx.admit(&state, Some(&form.csrf), Needs::Auditor) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let Some(audit_key) = &state.audit_key else {
        return ctx
            .refusal(
                &state,
                StatusCode::CONFLICT,
                fill(ctx.lang, "who_no_key", &[]),
            )
            .into_response();
    };
    let dataset = match form.dataset.trim().parse::<jembatan_core::DatasetId>() {
        Ok(d) => d,
        Err(e) => {
            return ctx
                .refusal(
                    &state,
                    StatusCode::BAD_REQUEST,
                    fill(ctx.lang, "bad_dataset", &[("reason", &e.to_string())]),
                )
                .into_response();
        }
    };
    let key = form.key.trim();
    if key.is_empty() || key.len() > 256 {
        return ctx
            .refusal(
                &state,
                StatusCode::BAD_REQUEST,
                fill(ctx.lang, "who_bad_key", &[]),
            )
            .into_response();
    }
    let hash = jembatan_broker::subject_hash(audit_key, dataset.as_str(), key);
    drop(form);
    let entries = match state.broker.subject_entries(&hash, EXPORT_CAP).await {
        Ok(e) => e,
        Err(status) => return ctx.broker_refused(&state, &status).into_response(),
    };
    let rows = views(&state, ctx.lang, &entries);
    let datasets = datasets(&state).await;
    render(
        &state,
        "who.html",
        ctx.lang,
        Some(&session),
        "who",
        context! {
            datasets => datasets,
            chosen => dataset.as_str(),
            searched => true,
            rows => rows,
            subject_hash => hash,
            no_key => false,
        },
    )
}

// -------------------------------------------------------------- overview

#[derive(Debug, Serialize)]
struct Bar {
    label: String,
    allowed: u64,
    denied: u64,
    x: u64,
    h_allowed: u64,
    h_denied: u64,
}

#[derive(Debug, Serialize)]
struct Count {
    name: String,
    count: u64,
    width: u64,
}

fn counts(map: BTreeMap<String, u64>, top: usize) -> Vec<Count> {
    let mut list: Vec<(String, u64)> = map.into_iter().collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    list.truncate(top);
    let max = list.first().map_or(1, |(_, c)| (*c).max(1));
    list.into_iter()
        .map(|(name, count)| Count {
            width: count * 100 / max,
            name,
            count,
        })
        .collect()
}

pub(crate) async fn overview(AxumState(state): AxumState<Shared>, ctx: Ctx) -> Response {
    let session = match ctx.admit(&state, None, Needs::Anyone) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let agreements = state
        .broker
        .agreements()
        .list(pb::ListAgreementsRequest::default())
        .await
        .map(|r| r.into_inner().agreements)
        .unwrap_or_default();
    let now = Utc::now();
    let soon = agreements.iter().filter(|a| expiring_soon(a, now)).count();
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    for a in &agreements {
        *by_status
            .entry(status_name(a.status).to_owned())
            .or_default() += 1;
    }
    if state.role() != Role::Auditor {
        return render(
            &state,
            "overview.html",
            ctx.lang,
            Some(&session),
            "overview",
            context! {
                audit => false,
                by_status => by_status,
                expiring => soon,
                health => state.broker.health().await,
            },
        );
    }
    let hours = 72_i64;
    let start = (now - ChronoDuration::hours(hours - 1))
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(now);
    let request = pb::QueryEntriesRequest {
        from: Some(timestamp(start)),
        ..Default::default()
    };
    let (entries, truncated) = match state.broker.all_entries(request, OVERVIEW_CAP).await {
        Ok(found) => found,
        Err(status) => return ctx.broker_refused(&state, &status).into_response(),
    };
    let mut per_hour = vec![(0u64, 0u64); usize::try_from(hours).unwrap_or(72)];
    let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
    let mut pairs: BTreeMap<String, u64> = BTreeMap::new();
    let mut last_seq = None;
    for e in &entries {
        last_seq = Some(e.seq);
        let Some(v) = EntryView::parse(e.seq, &e.canonical, "", ctx.lang, &state.names) else {
            continue;
        };
        // each exchange once: its decision, or a lookup's one entry
        if v.kind != "decision" && v.kind != "answered" {
            continue;
        }
        let Ok(t) = DateTime::parse_from_rfc3339(&v.time) else {
            continue;
        };
        let slot = (t.with_timezone(&Utc) - start).num_hours();
        let Some(bucket) = usize::try_from(slot).ok().and_then(|s| per_hour.get_mut(s)) else {
            continue;
        };
        if v.decision == "deny" {
            bucket.1 += 1;
            for r in &v.reasons {
                *reasons.entry(r.code.clone()).or_default() += 1;
            }
        } else {
            bucket.0 += 1;
            *pairs
                .entry(format!(
                    "{} → {}",
                    agency_name(&state.names, &v.provider),
                    agency_name(&state.names, &v.consumer)
                ))
                .or_default() += 1;
        }
    }
    let max = per_hour
        .iter()
        .map(|(a, d)| a + d)
        .max()
        .unwrap_or(0)
        .max(1);
    let bars: Vec<Bar> = per_hour
        .iter()
        .enumerate()
        .map(|(i, (a, d))| Bar {
            label: (start + ChronoDuration::hours(i as i64))
                .format("%Y-%m-%d %H:00")
                .to_string(),
            allowed: *a,
            denied: *d,
            x: i as u64 * 10,
            h_allowed: a * 100 / max,
            h_denied: d * 100 / max,
        })
        .collect();
    let checkpoint = state
        .broker
        .audit()
        .latest_checkpoint(pb::LatestCheckpointRequest {})
        .await
        .ok()
        .map(|r| r.into_inner());
    let signed_at = checkpoint
        .as_ref()
        .and_then(|c| c.signed_at.as_ref())
        .and_then(from_timestamp);
    let next_due = checkpoint
        .as_ref()
        .and_then(|c| c.next_due.as_ref())
        .and_then(from_timestamp);
    let uncovered = match (&checkpoint, last_seq) {
        (Some(c), Some(last)) => (last + 1).saturating_sub(c.size),
        (None, Some(last)) => last + 1,
        _ => 0,
    };
    let total_allowed: u64 = per_hour.iter().map(|(a, _)| a).sum();
    let total_denied: u64 = per_hour.iter().map(|(_, d)| d).sum();
    render(
        &state,
        "overview.html",
        ctx.lang,
        Some(&session),
        "overview",
        context! {
            audit => true,
            bars => bars,
            chart_max => max,
            total_allowed => total_allowed,
            total_denied => total_denied,
            reasons => counts(reasons, 12),
            pairs => counts(pairs, 10),
            checkpoint_size => checkpoint.as_ref().map(|c| c.size),
            checkpoint_note => checkpoint.as_ref().map(|c| c.note.clone()),
            checkpoint_signed => signed_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            checkpoint_age => signed_at.map(|t| age_words(ctx.lang, now - t)),
            checkpoint_next => next_due.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            checkpoint_every => checkpoint.as_ref().map(|c| c.next_after_entries),
            uncovered => uncovered,
            truncated => truncated,
            read => entries.len(),
            by_status => by_status,
            expiring => soon,
            health => state.broker.health().await,
            latest_entry => entries.last().and_then(|e| EntryView::parse(e.seq, &e.canonical, "", ctx.lang, &state.names)).map(|v| v.time),
        },
    )
}

// ------------------------------------------------------------ agreements

fn status_name(status: i32) -> &'static str {
    match pb::AgreementStatus::try_from(status) {
        Ok(pb::AgreementStatus::Proposed) => "proposed",
        Ok(pb::AgreementStatus::ProviderApproved) => "provider_approved",
        Ok(pb::AgreementStatus::Approved) => "approved",
        Ok(pb::AgreementStatus::Revoked) => "revoked",
        Ok(pb::AgreementStatus::Expired) => "expired",
        _ => "unspecified",
    }
}

fn time_of(t: &Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let t = t.as_ref()?;
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
}

fn expiring_soon(a: &pb::Agreement, now: DateTime<Utc>) -> bool {
    status_name(a.status) == "approved"
        && time_of(&a.valid_until).is_some_and(|u| u > now && u - now <= ChronoDuration::days(30))
}

#[derive(Debug, Serialize)]
struct AgreementView {
    id: String,
    provider: String,
    consumer: String,
    dataset: String,
    purpose: String,
    status: String,
    valid_from: String,
    valid_until: String,
    expiring: bool,
    fields: Vec<(String, String)>,
    rows_per_day: u64,
    requests_per_minute: u64,
    row_filter: String,
    terms_sha256: String,
}

fn agreement_view(a: &pb::Agreement, now: DateTime<Utc>) -> AgreementView {
    let fmt = |t: &Option<prost_types::Timestamp>| {
        time_of(t).map_or(String::new(), |t| {
            jembatan_core::agreement::format_instant(&t)
        })
    };
    AgreementView {
        id: a.id.clone(),
        provider: a.provider.clone(),
        consumer: a.consumer.clone(),
        dataset: a.dataset.clone(),
        purpose: a.purpose.clone(),
        status: status_name(a.status).to_owned(),
        valid_from: fmt(&a.valid_from),
        valid_until: fmt(&a.valid_until),
        expiring: expiring_soon(a, now),
        fields: a
            .fields
            .iter()
            .map(|g| {
                let mode = match pb::AccessMode::try_from(g.mode) {
                    Ok(pb::AccessMode::Verify) => "verify".to_owned(),
                    Ok(pb::AccessMode::Masked) => format!("masked {}", g.mask),
                    _ => "read".to_owned(),
                };
                (g.field.clone(), mode)
            })
            .collect(),
        rows_per_day: a.quota.map_or(0, |q| q.rows_per_day),
        requests_per_minute: a.quota.map_or(0, |q| q.requests_per_minute),
        row_filter: a
            .row_filter
            .as_ref()
            .and_then(|f| jembatan_core::Filter::try_from(f).ok())
            .and_then(|f| serde_json::to_string(&f).ok())
            .unwrap_or_default(),
        terms_sha256: a.terms_sha256.clone(),
    }
}

pub(crate) async fn agreements(AxumState(state): AxumState<Shared>, ctx: Ctx) -> Response {
    let session = match ctx.admit(&state, None, Needs::Anyone) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let list = match state
        .broker
        .agreements()
        .list(pb::ListAgreementsRequest::default())
        .await
    {
        Ok(r) => r.into_inner().agreements,
        Err(status) => return ctx.broker_refused(&state, &status).into_response(),
    };
    let now = Utc::now();
    let views: Vec<AgreementView> = list.iter().map(|a| agreement_view(a, now)).collect();
    let providers: std::collections::BTreeSet<&str> =
        views.iter().map(|a| a.provider.as_str()).collect();
    let consumers: std::collections::BTreeSet<&str> =
        views.iter().map(|a| a.consumer.as_str()).collect();
    // provider × consumer: the agreements of each pair
    let matrix: Matrix = providers
        .iter()
        .map(|p| {
            let row = consumers
                .iter()
                .map(|c| {
                    views
                        .iter()
                        .filter(|a| a.provider == *p && a.consumer == *c)
                        .map(|a| (a.id.clone(), a.status.clone()))
                        .collect()
                })
                .collect();
            ((*p).to_owned(), row)
        })
        .collect();
    render(
        &state,
        "agreements.html",
        ctx.lang,
        Some(&session),
        "agreements",
        context! {
            agreements => views,
            consumers => consumers.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>(),
            matrix => matrix,
        },
    )
}

#[derive(Debug, Deserialize)]
pub(crate) struct DoneQuery {
    done: Option<String>,
}

pub(crate) async fn agreement(
    AxumState(state): AxumState<Shared>,
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<DoneQuery>,
) -> Response {
    let session = match ctx.admit(&state, None, Needs::Anyone) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let found = match state
        .broker
        .agreements()
        .get(pb::GetAgreementRequest { id: id.clone() })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return ctx.broker_refused(&state, &status).into_response(),
    };
    let view = agreement_view(&found, Utc::now());
    // its history from the log, for an auditor: the agreement entries of
    // its consumer on its dataset
    let history = if state.role() == Role::Auditor {
        let request = pb::QueryEntriesRequest {
            agency: found.consumer.clone(),
            dataset: found.dataset.clone(),
            ..Default::default()
        };
        match state.broker.all_entries(request, EXPORT_CAP).await {
            Ok((all, _)) => views(&state, ctx.lang, &all)
                .into_iter()
                .filter(|v| v.kind == "agreement" && v.agreement_id == found.id)
                .collect(),
            Err(status) => return ctx.broker_refused(&state, &status).into_response(),
        }
    } else {
        Vec::new()
    };
    let done = q
        .done
        .filter(|d| d == "approve" || d == "revoke" || d == "propose");
    render(
        &state,
        "agreement.html",
        ctx.lang,
        Some(&session),
        "agreements",
        context! {
            a => view,
            used_rows => found.quota_use.as_ref().map(|u| u.rows_today),
            used_requests => found.quota_use.as_ref().map(|u| u.requests_this_minute),
            history => history,
            done => done,
            can_approve => may_take(state.broker.identity(), &found, "approve"),
            can_revoke => may_take(state.broker.identity(), &found, "revoke"),
        },
    )
}

/// Whether this console's certificate may take `action` on agreement
/// `a` as it stands, by the lifecycle's rules: the provider approves a
/// proposal, an operator approves after the provider; either agency or
/// an operator revokes an agreement not yet ended. The broker decides;
/// the console offers only the steps it would take.
fn may_take(by: &jembatan_core::Identity, a: &pb::Agreement, action: &str) -> bool {
    let status = status_name(a.status);
    let agency = by.agency.as_ref().map(|a| a.as_str());
    match (by.role, action) {
        (Role::Operator, "approve") => status == "provider_approved",
        (Role::Agency, "approve") => status == "proposed" && agency == Some(a.provider.as_str()),
        (Role::Operator, "revoke") => {
            matches!(status, "proposed" | "provider_approved" | "approved")
        }
        (Role::Agency, "revoke") => {
            matches!(status, "proposed" | "provider_approved" | "approved")
                && (agency == Some(a.provider.as_str()) || agency == Some(a.consumer.as_str()))
        }
        _ => false,
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct StepForm {
    csrf: String,
    #[serde(default)]
    confirm: String,
    #[serde(default)]
    reason: String,
}

/// Approve or revoke: first a confirmation page, then the call.
pub(crate) async fn agreement_step(
    AxumState(state): AxumState<Shared>,
    ctx: Ctx,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<StepForm>,
) -> Response {
    let session = match ctx.admit(&state, Some(&form.csrf), Needs::Anyone) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if action != "approve" && action != "revoke" {
        return not_found(AxumState(state), ctx).await;
    }
    if state.role() == Role::Auditor {
        tracing::warn!(user = %session.user, %action, agreement = %id, "agreement step refused: an auditor console");
        return ctx
            .refusal(
                &state,
                StatusCode::FORBIDDEN,
                fill(ctx.lang, "needs_operator", &[]),
            )
            .into_response();
    }
    let found = match state
        .broker
        .agreements()
        .get(pb::GetAgreementRequest { id: id.clone() })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return ctx.broker_refused(&state, &status).into_response(),
    };
    if !may_take(state.broker.identity(), &found, &action) {
        tracing::warn!(user = %session.user, %action, agreement = %id, "agreement step refused: not this certificate's step");
        return ctx
            .refusal(
                &state,
                StatusCode::FORBIDDEN,
                fill(ctx.lang, "not_your_step", &[]),
            )
            .into_response();
    }
    if form.confirm != "yes" {
        return render(
            &state,
            "confirm.html",
            ctx.lang,
            Some(&session),
            "agreements",
            context! { a => agreement_view(&found, Utc::now()), action => action },
        );
    }
    let result = if action == "approve" {
        state
            .broker
            .agreements()
            .approve(pb::ApproveRequest { id: id.clone() })
            .await
    } else {
        state
            .broker
            .agreements()
            .revoke(pb::RevokeRequest {
                id: id.clone(),
                reason: form.reason.trim().to_owned(),
            })
            .await
    };
    match result {
        Ok(_) => {
            tracing::info!(user = %session.user, %action, agreement = %id, "agreement step taken");
            Redirect::to(&format!("/agreements/{}?done={action}", encode(&id))).into_response()
        }
        Err(status) => ctx.broker_refused(&state, &status).into_response(),
    }
}

// ------------------------------------------------------------ proposals

/// The proposal form, as sent (and sent again from the confirmation page).
#[derive(Debug, Default, Deserialize, Serialize)]
pub(crate) struct ProposeForm {
    #[serde(default, skip_serializing)]
    csrf: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    dataset: String,
    #[serde(default)]
    purpose: String,
    /// One grant a line (or comma): `name`, `name:verify`, `name:masked:RULE`.
    #[serde(default)]
    fields: String,
    #[serde(default)]
    valid_until: String,
    #[serde(default)]
    rows_per_day: String,
    #[serde(default)]
    requests_per_minute: String,
    #[serde(default, skip_serializing)]
    confirm: String,
}

/// Parses the field grants: `name` (read), `name:read`, `name:verify` or
/// `name:masked:RULE`; the first that is none of these is the error.
fn parse_grants(text: &str) -> Result<Vec<pb::FieldGrant>, String> {
    let mut grants = Vec::new();
    for spec in text
        .split(['\n', ','])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (name, rest) = spec.split_once(':').unwrap_or((spec, "read"));
        let (mode, mask) = match rest.split_once(':') {
            None if rest == "read" => (pb::AccessMode::Read, String::new()),
            None if rest == "verify" => (pb::AccessMode::Verify, String::new()),
            Some(("masked", rule)) if rule.parse::<jembatan_core::MaskRule>().is_ok() => {
                (pb::AccessMode::Masked, rule.to_owned())
            }
            _ => return Err(spec.to_owned()),
        };
        if name.is_empty() || name.parse::<jembatan_core::FieldName>().is_err() {
            return Err(spec.to_owned());
        }
        grants.push(pb::FieldGrant {
            field: name.to_owned(),
            mode: mode as i32,
            mask,
        });
    }
    Ok(grants)
}

/// The terms a proposal form gives, or what is wrong with it in words.
fn proposal(
    form: &ProposeForm,
    by: &jembatan_core::Identity,
    lang: Lang,
) -> Result<pb::Agreement, String> {
    let dataset: jembatan_core::DatasetId = form.dataset.trim().parse().map_err(|_| {
        fill(
            lang,
            "propose_bad_dataset",
            &[("dataset", form.dataset.trim())],
        )
    })?;
    let purpose = form.purpose.trim();
    if purpose.is_empty() {
        return Err(fill(lang, "propose_no_purpose", &[]));
    }
    let fields = parse_grants(&form.fields)
        .map_err(|spec| fill(lang, "propose_bad_field", &[("field", &spec)]))?;
    if fields.is_empty() {
        return Err(fill(lang, "propose_no_fields", &[]));
    }
    let valid_until = match form.valid_until.trim() {
        "" => None,
        text => {
            Some(timestamp(form_time(text).ok_or_else(|| {
                fill(lang, "propose_bad_date", &[("date", text)])
            })?))
        }
    };
    let number = |text: &str| -> Result<u64, String> {
        match text.trim() {
            "" => Ok(0),
            n => n
                .parse()
                .map_err(|_| fill(lang, "propose_bad_number", &[("number", n)])),
        }
    };
    let (rows, requests) = (
        number(&form.rows_per_day)?,
        number(&form.requests_per_minute)?,
    );
    Ok(pb::Agreement {
        id: form.id.trim().to_owned(),
        provider: dataset.agency().to_string(),
        consumer: by
            .agency
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        dataset: dataset.to_string(),
        fields,
        purpose: purpose.to_owned(),
        valid_until,
        quota: (rows > 0 || requests > 0).then_some(pb::Quota {
            rows_per_day: rows,
            requests_per_minute: requests,
        }),
        ..Default::default()
    })
}

/// The datasets an agency may propose to read: every registered one but
/// its own.
async fn proposable(state: &State) -> Vec<String> {
    let own = state
        .broker
        .identity()
        .agency
        .as_ref()
        .map(ToString::to_string);
    state
        .broker
        .registry()
        .list_datasets(pb::ListDatasetsRequest {})
        .await
        .map(|r| r.into_inner().datasets)
        .unwrap_or_default()
        .into_iter()
        .filter(|d| own.as_deref() != Some(d.provider.as_str()))
        .map(|d| d.dataset)
        .collect()
}

/// Only an agency's console proposes: the consuming agency's certificate.
fn need_agency(ctx: &Ctx, state: &Shared) -> Result<(), Box<Response>> {
    if state.role() == Role::Agency {
        return Ok(());
    }
    Err(Box::new(
        ctx.refusal(
            state,
            StatusCode::FORBIDDEN,
            fill(ctx.lang, "needs_agency", &[]),
        )
        .into_response(),
    ))
}

pub(crate) async fn propose_form(AxumState(state): AxumState<Shared>, ctx: Ctx) -> Response {
    let session = match ctx.admit(&state, None, Needs::Anyone) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Err(r) = need_agency(&ctx, &state) {
        return *r;
    }
    render(
        &state,
        "propose.html",
        ctx.lang,
        Some(&session),
        "propose",
        context! { form => ProposeForm::default(), datasets => proposable(&state).await },
    )
}

/// A proposal: the form checked here, then a confirmation page with the
/// terms, then the call; the broker writes the step to the log first.
pub(crate) async fn propose(
    AxumState(state): AxumState<Shared>,
    ctx: Ctx,
    Form(form): Form<ProposeForm>,
) -> Response {
    let session = match ctx.admit(&state, Some(&form.csrf), Needs::Anyone) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if let Err(r) = need_agency(&ctx, &state) {
        return *r;
    }
    let terms = match proposal(&form, state.broker.identity(), ctx.lang) {
        Ok(terms) => terms,
        Err(error) => {
            let mut page = render(
                &state,
                "propose.html",
                ctx.lang,
                Some(&session),
                "propose",
                context! { form => &form, datasets => proposable(&state).await, error => error },
            );
            *page.status_mut() = StatusCode::BAD_REQUEST;
            return page;
        }
    };
    if form.confirm != "yes" {
        return render(
            &state,
            "propose.html",
            ctx.lang,
            Some(&session),
            "propose",
            context! { form => &form, confirm => true, a => agreement_view(&terms, Utc::now()) },
        );
    }
    match state
        .broker
        .agreements()
        .propose(pb::ProposeRequest {
            agreement: Some(terms),
        })
        .await
    {
        Ok(r) => {
            let id = r.into_inner().id;
            tracing::info!(user = %session.user, agreement = %id, "agreement proposed");
            Redirect::to(&format!("/agreements/{}?done=propose", encode(&id))).into_response()
        }
        Err(status) => ctx.broker_refused(&state, &status).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_read_one_a_line() {
        let grants =
            parse_grants("nik\nnama:masked:keep_first:3, tanggal_lahir:verify\n\n kode_desa:read")
                .unwrap();
        let got: Vec<(String, i32, String)> = grants
            .into_iter()
            .map(|g| (g.field, g.mode, g.mask))
            .collect();
        assert_eq!(
            got,
            [
                ("nik".to_owned(), pb::AccessMode::Read as i32, String::new()),
                (
                    "nama".to_owned(),
                    pb::AccessMode::Masked as i32,
                    "keep_first:3".to_owned()
                ),
                (
                    "tanggal_lahir".to_owned(),
                    pb::AccessMode::Verify as i32,
                    String::new()
                ),
                (
                    "kode_desa".to_owned(),
                    pb::AccessMode::Read as i32,
                    String::new()
                ),
            ]
        );
        for bad in [
            "nama:masked",
            "nama:masked:half",
            "nik:write",
            ":read",
            "bad name",
        ] {
            assert_eq!(parse_grants(bad).unwrap_err(), bad, "{bad}");
        }
        assert!(parse_grants(" \n ").unwrap().is_empty());
    }

    #[test]
    fn a_proposal_form_gives_terms_or_says_what_is_wrong() {
        let by =
            jembatan_core::Identity::new(Role::Agency, Some("dinkes".parse().unwrap())).unwrap();
        let form = |f: fn(&mut ProposeForm)| {
            let mut form = ProposeForm {
                dataset: "disdukcapil.penduduk".into(),
                purpose: "imunisasi".into(),
                fields: "nik".into(),
                ..Default::default()
            };
            f(&mut form);
            proposal(&form, &by, Lang::En)
        };
        let terms = form(|f| {
            f.rows_per_day = "500".into();
            f.valid_until = "2027-06-30".into();
        })
        .unwrap();
        assert_eq!(
            (terms.provider.as_str(), terms.consumer.as_str()),
            ("disdukcapil", "dinkes")
        );
        assert_eq!(terms.quota.unwrap().rows_per_day, 500);
        assert!(terms.valid_until.is_some());
        for (f, words) in [
            (form(|f| f.dataset = "nodot".into()), "nodot"),
            (form(|f| f.purpose = " ".into()), "purpose"),
            (form(|f| f.fields = "nik:write".into()), "nik:write"),
            (form(|f| f.fields = String::new()), "field"),
            (form(|f| f.valid_until = "besok".into()), "besok"),
            (form(|f| f.rows_per_day = "-1".into()), "-1"),
        ] {
            let message = f.unwrap_err();
            assert!(message.contains(words), "{message}");
        }
    }

    #[test]
    fn only_local_paths_are_followed() {
        for (given, want) in [
            (Some("/exchanges?x=1"), "/exchanges?x=1"),
            (Some("//evil.example/"), "/"),
            (Some("https://evil.example/"), "/"),
            (Some("/\\evil"), "/"),
            (None, "/"),
        ] {
            assert_eq!(local_path(given), want, "{given:?}");
        }
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_neutralized() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
    }

    #[test]
    fn exchange_ids_give_their_time() {
        let t = uuid7_time("01a246c1-0b5d-72fb-9c30-a902df4a8e03").unwrap();
        assert_eq!(t.timestamp_millis(), 0x01a2_46c1_0b5d);
        assert!(uuid7_time("not-a-uuid").is_none());
        assert!(uuid7_time("01a246c1-0b5d-42fb-9c30-a902df4a8e03").is_none());
    }

    #[test]
    fn ages_are_told_in_the_readers_unit() {
        let age = |s: i64| age_words(Lang::En, ChronoDuration::seconds(s));
        assert_eq!(age(-3), "0 seconds");
        assert_eq!(age(119), "119 seconds");
        assert_eq!(age(120), "2 minutes");
        assert_eq!(age(7200), "2 hours");
        assert_eq!(age(172_800), "2 days");
        assert_eq!(age_words(Lang::Id, ChronoDuration::seconds(61)), "61 detik");
    }

    #[test]
    fn form_times_take_dates_and_datetime_local() {
        assert!(form_time("2026-12-05").is_some());
        assert!(form_time("2026-12-05T10:30").is_some());
        assert!(form_time("2026-12-05T10:30:00Z").is_some());
        assert!(form_time("kemarin").is_none());
    }
}
