//! "Verify the whole log": every entry read through the Audit service
//! and checked as `jembatan audit verify` checks a store — seqs without a
//! gap, each entry's SHA-256, the Merkle tree over the entries against the
//! latest signed checkpoint's root, and that checkpoint's signature
//! against the verifier key in the console's config. It runs as a task;
//! the page shows its progress and refreshes itself until it ends.

use std::sync::{Arc, Mutex, PoisonError};

use axum::Form;
use axum::extract::State as AxumState;
use axum::response::{IntoResponse, Redirect, Response};
use jembatan_proto::v1 as pb;
use jembatan_tlog::merkle::{CompactRange, leaf_hash};
use minijinja::context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::i18n::{Lang, fill};
use crate::pages::{Ctx, Needs, render};
use crate::server::State;

type Shared = Arc<State>;

/// Where a verification run stands.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Progress {
    pub(crate) running: bool,
    pub(crate) checked: u64,
    /// The checkpoint's size: the entries that must give its root.
    pub(crate) target: u64,
    pub(crate) ok: Option<bool>,
    pub(crate) message: String,
}

fn set(progress: &Mutex<Progress>, f: impl FnOnce(&mut Progress)) {
    f(&mut progress.lock().unwrap_or_else(PoisonError::into_inner));
}

async fn run(state: Shared, progress: Arc<Mutex<Progress>>, lang: Lang) {
    let outcome = check(&state, &progress, lang).await;
    set(&progress, |p| {
        p.running = false;
        p.ok = Some(outcome.is_ok());
        p.message = match outcome {
            Ok(m) | Err(m) => m,
        };
    });
}

async fn check(state: &State, progress: &Mutex<Progress>, lang: Lang) -> Result<String, String> {
    let broker_said = |s: tonic::Status| fill(lang, "broker_said", &[("message", s.message())]);
    let checkpoint = state
        .broker
        .audit()
        .latest_checkpoint(pb::LatestCheckpointRequest {})
        .await
        .map_err(broker_said)?
        .into_inner();
    let size = checkpoint.size;
    set(progress, |p| p.target = size);
    let signature = match &state.verifier_key {
        Some(key) => {
            let verifier =
                jembatan_tlog::note::Verifier::from_key_string(key).map_err(|e| e.to_string())?;
            let opened = jembatan_tlog::note::Checkpoint::open(&checkpoint.note, &verifier)
                .map_err(|e| fill(lang, "verify_bad_signature", &[("error", &e.to_string())]))?;
            if opened.size != size || opened.root.as_slice() != checkpoint.root_hash.as_slice() {
                return Err(fill(lang, "verify_note_mismatch", &[]));
            }
            fill(lang, "verify_signature_ok", &[])
        }
        None => fill(lang, "verify_signature_unchecked", &[]),
    };
    // entries below an archived point are no longer served: the tree
    // resumes there as the broker states it, and the signed root holds
    // that to account
    let archived = checkpoint.archived_up_to;
    let mut tree = match archived {
        0 => CompactRange::new(),
        n => CompactRange::from_slices(n, &checkpoint.archived_tree)
            .filter(|_| n <= size)
            .ok_or_else(|| fill(lang, "verify_bad_root", &[("size", &size.to_string())]))?,
    };
    if archived > 0 && tree.size() == size && tree.root().as_slice() != checkpoint.root_hash {
        return Err(fill(
            lang,
            "verify_bad_root",
            &[("size", &size.to_string())],
        ));
    }
    let mut next = archived;
    let mut request = pb::QueryEntriesRequest {
        page_size: 1000,
        ..Default::default()
    };
    loop {
        let page = state
            .broker
            .entries(request.clone())
            .await
            .map_err(broker_said)?;
        let token = page
            .last()
            .map(|e| e.next_page_token.clone())
            .unwrap_or_default();
        for e in &page {
            let seq = e.seq.to_string();
            if e.seq != next {
                return Err(fill(lang, "verify_gap", &[("seq", &next.to_string())]));
            }
            if hex::encode(Sha256::digest(&e.canonical)) != e.entry_sha256 {
                return Err(fill(lang, "verify_bad_entry", &[("seq", &seq)]));
            }
            if e.seq < size {
                tree.push(leaf_hash(&e.canonical))
                    .map_err(|_| "tree full".to_owned())?;
                if tree.size() == size && tree.root().as_slice() != checkpoint.root_hash.as_slice()
                {
                    return Err(fill(
                        lang,
                        "verify_bad_root",
                        &[("size", &size.to_string())],
                    ));
                }
            }
            next += 1;
        }
        set(progress, |p| p.checked = next);
        if token.is_empty() {
            break;
        }
        request.page_token = token;
    }
    if next < size {
        return Err(fill(
            lang,
            "verify_short",
            &[("n", &next.to_string()), ("size", &size.to_string())],
        ));
    }
    let ok = fill(
        lang,
        "verify_ok",
        &[
            ("n", &(next - archived).to_string()),
            ("size", &size.to_string()),
            ("newer", &(next - size).to_string()),
            ("signature", &signature),
        ],
    );
    Ok(match archived {
        0 => ok,
        n => format!(
            "{ok} {}",
            fill(lang, "verify_archived", &[("n", &n.to_string())])
        ),
    })
}

pub(crate) async fn page(AxumState(state): AxumState<Shared>, ctx: Ctx) -> Response {
    let session = match ctx.admit(&state, None, Needs::Auditor) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let progress = state
        .verify
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(|p| p.lock().unwrap_or_else(PoisonError::into_inner).clone());
    render(
        &state,
        "verify.html",
        ctx.lang(),
        Some(&session),
        "verify",
        context! { progress => progress },
    )
}

#[derive(Debug, Deserialize)]
pub(crate) struct StartForm {
    csrf: String,
}

pub(crate) async fn start(
    AxumState(state): AxumState<Shared>,
    ctx: Ctx,
    Form(form): Form<StartForm>,
) -> Response {
    let session = match ctx.admit(&state, Some(&form.csrf), Needs::Auditor) {
        Ok(s) => s,
        Err(r) => return *r,
    };
    let mut slot = state.verify.lock().unwrap_or_else(PoisonError::into_inner);
    let running = slot
        .as_ref()
        .is_some_and(|p| p.lock().unwrap_or_else(PoisonError::into_inner).running);
    if !running {
        let progress = Arc::new(Mutex::new(Progress {
            running: true,
            ..Progress::default()
        }));
        *slot = Some(progress.clone());
        tracing::info!(user = %session.user, "whole-log verification started");
        tokio::spawn(run(state.clone(), progress, ctx.lang()));
    }
    Redirect::to("/verify").into_response()
}
