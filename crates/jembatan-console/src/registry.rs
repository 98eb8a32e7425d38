//! The registry pages: datasets with their compatibility mode and the
//! mappings between their schemas, a dataset's schema versions side by
//! side with a line diff and the mappings reading or producing its
//! records (each document shown), and the "check this new schema" form
//! that shows the broker's verdict with each incompatibility's path and
//! counterexample.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jembatan_proto::v1 as pb;
use minijinja::context;
use serde::{Deserialize, Serialize};

use crate::i18n::fill;
use crate::pages::{Ctx, Needs, render};
use crate::server::State;

type Shared = Arc<State>;

/// Longest schema text (lines) the diff compares.
const DIFF_LINES: usize = 2000;
/// Largest schema the check form sends.
const MAX_SCHEMA_BYTES: usize = 256 * 1024;

fn mode_name(mode: i32) -> &'static str {
    match pb::CompatibilityMode::try_from(mode) {
        Ok(pb::CompatibilityMode::None) => "NONE",
        Ok(pb::CompatibilityMode::Backward) => "BACKWARD",
        Ok(pb::CompatibilityMode::BackwardTransitive) => "BACKWARD_TRANSITIVE",
        Ok(pb::CompatibilityMode::Forward) => "FORWARD",
        Ok(pb::CompatibilityMode::ForwardTransitive) => "FORWARD_TRANSITIVE",
        Ok(pb::CompatibilityMode::Full) => "FULL",
        Ok(pb::CompatibilityMode::FullTransitive) => "FULL_TRANSITIVE",
        _ => "default",
    }
}

fn state_name(state: i32) -> &'static str {
    match pb::VersionState::try_from(state) {
        Ok(pb::VersionState::Active) => "active",
        Ok(pb::VersionState::Deprecated) => "deprecated",
        Ok(pb::VersionState::Disabled) => "disabled",
        _ => "unspecified",
    }
}

#[derive(Debug, Serialize)]
struct DatasetView {
    dataset: String,
    provider: String,
    mode: &'static str,
    latest: u32,
}

/// One registered mapping version, for a template.
#[derive(Debug, Serialize)]
struct MappingView {
    source: String,
    target: String,
    version: u32,
    registered_at: String,
    /// The document, pretty-printed.
    document: String,
}

/// The mappings reading or producing records of `dataset` (every mapping
/// when it is empty).
async fn mappings(state: &State, dataset: &str) -> Result<Vec<MappingView>, tonic::Status> {
    let list = state
        .broker
        .registry()
        .list_mappings(pb::ListMappingsRequest {
            dataset: dataset.to_owned(),
        })
        .await?
        .into_inner()
        .mappings;
    Ok(list
        .into_iter()
        .map(|m| MappingView {
            registered_at: m
                .registered_at
                .and_then(|t| {
                    chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
                })
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default(),
            document: pretty(&m.document_json),
            source: m.source,
            target: m.target,
            version: m.version,
        })
        .collect())
}

pub(crate) async fn datasets(AxumState(state): AxumState<Shared>, ctx: Ctx) -> Response {
    let session = match ctx.admit(&state, None, Needs::Anyone) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let list = match state
        .broker
        .registry()
        .list_datasets(pb::ListDatasetsRequest {})
        .await
    {
        Ok(r) => r.into_inner().datasets,
        Err(status) => return ctx.broker_refused(&state, &status).into_response(),
    };
    let rows: Vec<DatasetView> = list
        .into_iter()
        .map(|d| DatasetView {
            mode: mode_name(d.compatibility),
            dataset: d.dataset,
            provider: d.provider,
            latest: d.latest_version,
        })
        .collect();
    let mappings = match mappings(&state, "").await {
        Ok(m) => m,
        Err(status) => return ctx.broker_refused(&state, &status).into_response(),
    };
    render(
        &state,
        "registry.html",
        ctx.lang(),
        Some(&session),
        "registry",
        context! { datasets => rows, mappings => mappings },
    )
}

/// One line of a diff: `=` both, `-` only the older, `+` only the newer.
#[derive(Debug, Serialize, PartialEq)]
struct DiffLine {
    op: &'static str,
    text: String,
}

/// A line diff by longest common subsequence.
fn diff(old: &str, new: &str) -> Vec<DiffLine> {
    let a: Vec<&str> = old.lines().take(DIFF_LINES).collect();
    let b: Vec<&str> = new.lines().take(DIFF_LINES).collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    let line = |op, text: &str| DiffLine {
        op,
        text: text.to_owned(),
    };
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push(line("=", a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(line("+", b[j]));
            j += 1;
        } else {
            out.push(line("-", a[i]));
            i += 1;
        }
    }
    out
}

fn pretty(schema_json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(schema_json)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| schema_json.to_owned())
}

#[derive(Debug, Deserialize)]
pub(crate) struct Versions {
    old: Option<u32>,
    new: Option<u32>,
}

#[derive(Debug, Serialize)]
struct VersionView {
    version: u32,
    schema_id: String,
    state: &'static str,
}

pub(crate) async fn dataset(
    AxumState(state): AxumState<Shared>,
    ctx: Ctx,
    Path(dataset): Path<String>,
    Query(q): Query<Versions>,
) -> Response {
    let session = match ctx.admit(&state, None, Needs::Anyone) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    page(&state, &ctx, &session, &dataset, q, None, None).await
}

async fn page(
    state: &Shared,
    ctx: &Ctx,
    session: &crate::auth::Session,
    dataset: &str,
    q: Versions,
    checked: Option<pb::CheckCompatibilityResponse>,
    candidate: Option<String>,
) -> Response {
    let versions = match state
        .broker
        .registry()
        .list_versions(pb::ListVersionsRequest {
            dataset: dataset.to_owned(),
        })
        .await
    {
        Ok(r) => r.into_inner().versions,
        Err(status) => return ctx.broker_refused(state, &status).into_response(),
    };
    let latest = versions.iter().map(|v| v.version).max().unwrap_or(0);
    let new = q.new.unwrap_or(latest);
    let old = q.old.unwrap_or(new.saturating_sub(1).max(1));
    let text_of = |n: u32| {
        versions
            .iter()
            .find(|v| v.version == n)
            .map(|v| pretty(&v.schema_json))
    };
    let (old_text, new_text) = (text_of(old), text_of(new));
    let lines = match (&old_text, &new_text) {
        (Some(a), Some(b)) => diff(a, b),
        _ => Vec::new(),
    };
    let views: Vec<VersionView> = versions
        .iter()
        .map(|v| VersionView {
            version: v.version,
            schema_id: v.schema_id.clone(),
            state: state_name(v.state),
        })
        .collect();
    let mappings = match mappings(state, dataset).await {
        Ok(m) => m,
        Err(status) => return ctx.broker_refused(state, &status).into_response(),
    };
    render(
        state,
        "dataset.html",
        ctx.lang(),
        Some(session),
        "registry",
        context! {
            dataset => dataset,
            versions => views,
            mappings => mappings,
            old => old,
            new => new,
            old_text => old_text,
            new_text => new_text,
            diff => lines,
            checked => checked.as_ref().map(|c| context! {
                compatible => c.compatible,
                reasons => c.incompatibilities.iter().map(|i| context! {
                    kind => i.kind.clone(),
                    path => i.path.clone(),
                    message => i.message.clone(),
                    counterexample => i.counterexample_json.clone(),
                    accepted_by => i.accepted_by.clone(),
                    against => i.against_version,
                }).collect::<Vec<_>>(),
            }),
            candidate => candidate,
        },
    )
}

#[derive(Deserialize)]
pub(crate) struct CheckForm {
    csrf: String,
    schema: String,
}

impl std::fmt::Debug for CheckForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckForm").finish_non_exhaustive()
    }
}

pub(crate) async fn check(
    AxumState(state): AxumState<Shared>,
    ctx: Ctx,
    Path(dataset): Path<String>,
    Form(form): Form<CheckForm>,
) -> Response {
    let session = match ctx.admit(&state, Some(&form.csrf), Needs::Anyone) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    if form.schema.len() > MAX_SCHEMA_BYTES || form.schema.trim().is_empty() {
        return ctx
            .refusal(
                &state,
                StatusCode::BAD_REQUEST,
                fill(ctx.lang(), "schema_size", &[]),
            )
            .into_response();
    }
    let verdict = match state
        .broker
        .registry()
        .check_compatibility(pb::CheckCompatibilityRequest {
            dataset: dataset.clone(),
            schema_json: form.schema.clone(),
            mode: 0,
            optional_friendly: false,
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => return ctx.broker_refused(&state, &status).into_response(),
    };
    let versions = Versions {
        old: None,
        new: None,
    };
    page(
        &state,
        &ctx,
        &session,
        &dataset,
        versions,
        Some(verdict),
        Some(form.schema),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_diff_keeps_common_lines_and_marks_the_rest() {
        let ops: Vec<String> = diff("a\nb\nc\n", "a\nc\nd\n")
            .into_iter()
            .map(|l| format!("{}{}", l.op, l.text))
            .collect();
        assert_eq!(ops, ["=a", "-b", "=c", "+d"]);
        assert!(diff("", "").is_empty());
        assert_eq!(diff("x", "").len(), 1);
    }
}
