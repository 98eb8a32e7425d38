//! Pages of a catch-up read ahead. A poll of a polling source that
//! returns a full page leaves more changes behind it, and the broker asks
//! for them next, after the page's last change: so the adapter starts
//! reading that page at once, while the broker is still taking the one
//! before, and the database is read without a pause between pages. A
//! page read ahead waits, unsent and unlogged, for the request that
//! matches it in every field; it is served (and logged) only then, and
//! dropped unread when no such request comes within [`KEPT`]. It is the
//! page a poll would have read a moment earlier: the keyset order and the
//! lag window hold as for any poll.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jembatan_proto::v1 as pb;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tonic::Status;

use crate::receipts::ServedEntry;

/// How long a page read ahead waits for its request.
const KEPT: Duration = Duration::from_secs(5);
/// Pages read ahead at once, adapter-wide: each holds at most
/// [`MESSAGES`] messages until its request comes.
const PAGES: usize = 4;
/// Messages of a page read ahead held before its request comes: only
/// pages of at most this many batches are read ahead (with the default
/// batch of 500 changes, a page of 10,000 is 20); records larger than a
/// batch's byte bound split a page into more, and the rest of it is read
/// once its request comes.
pub(super) const MESSAGES: usize = 24;

/// What a poll's stream carries.
pub(super) type Message = Result<pb::ChangesResponse, Status>;

/// The pages read ahead and waiting for their requests.
#[derive(Debug)]
pub(crate) struct ReadAhead {
    pages: Arc<Mutex<Vec<Page>>>,
    /// How long a page waits for its request ([`KEPT`]).
    kept: Duration,
    slots: Arc<Semaphore>,
}

/// A page being read, or read, ahead of its request.
#[derive(Debug)]
struct Page {
    /// The request it answers: a poll that matches it in every field.
    request: pb::ChangesRequest,
    claimed: Claimed,
}

/// A page read ahead as its request takes it.
#[derive(Debug)]
pub(super) struct Claimed {
    /// The page's messages, as its reading sends them.
    pub(super) messages: mpsc::Receiver<Message>,
    /// The page's receipt once it is read through (or stopped).
    pub(super) served: oneshot::Receiver<ServedEntry>,
    /// When the page was full: the request for the page after it, to be
    /// read ahead in turn.
    pub(super) chain: Arc<Chain>,
    /// The page's place among [`PAGES`], held until it is sent.
    pub(super) slot: OwnedSemaphorePermit,
}

/// Where a page read ahead stands: the next page is read ahead once
/// this one is both read through full and asked for, whichever comes
/// last, so that no page is read ahead of one nobody asked for.
#[derive(Debug, Default)]
pub(super) struct Chain(Mutex<ChainState>);

#[derive(Debug, Default)]
struct ChainState {
    asked: bool,
    next: Option<pb::ChangesRequest>,
}

impl Chain {
    /// The page is asked for: returns the next page's request if the
    /// page was read through full before.
    pub(super) fn asked(&self) -> Option<pb::ChangesRequest> {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.asked = true;
        state.next.take()
    }

    /// The page was read through full, and `next` asks for the one after
    /// it: returned when the page was asked for already.
    pub(super) fn full(&self, next: pb::ChangesRequest) -> Option<pb::ChangesRequest> {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if state.asked {
            Some(next)
        } else {
            state.next = Some(next);
            None
        }
    }
}

/// A page whose reading was just registered: where its reading sends its
/// messages and its receipt.
pub(super) struct Reading {
    pub(super) messages: mpsc::Sender<Message>,
    pub(super) served: oneshot::Sender<ServedEntry>,
    pub(super) chain: Arc<Chain>,
}

impl Default for ReadAhead {
    fn default() -> ReadAhead {
        ReadAhead::kept_for(KEPT)
    }
}

impl ReadAhead {
    fn kept_for(kept: Duration) -> ReadAhead {
        ReadAhead {
            pages: Arc::default(),
            kept,
            slots: Arc::new(Semaphore::new(PAGES)),
        }
    }

    /// The page read ahead for exactly this request, taken.
    pub(super) fn claim(&self, request: &pb::ChangesRequest) -> Option<Claimed> {
        let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        let at = pages.iter().position(|p| p.request == *request)?;
        Some(pages.swap_remove(at).claimed)
    }

    /// Registers a page to be read ahead for `request`, if a place is
    /// free and no page waits for the same request; it is dropped unread
    /// after [`KEPT`] unless asked for.
    pub(super) fn register(&self, request: pb::ChangesRequest) -> Option<Reading> {
        let slot = Arc::clone(&self.slots).try_acquire_owned().ok()?;
        let (messages, rx) = mpsc::channel(MESSAGES);
        let (served, served_rx) = oneshot::channel();
        let chain = Arc::new(Chain::default());
        {
            let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
            if pages.iter().any(|p| p.request == request) {
                return None;
            }
            pages.push(Page {
                request,
                claimed: Claimed {
                    messages: rx,
                    served: served_rx,
                    chain: Arc::clone(&chain),
                    slot,
                },
            });
        }
        // the page is known by its chain, which no other page shares (the
        // weak reference keeps the chain's address from being reused)
        let (pages, kept, page) = (Arc::clone(&self.pages), self.kept, Arc::downgrade(&chain));
        tokio::spawn(async move {
            tokio::time::sleep(kept).await;
            // dropping the page's receiver stops its reading
            let dropped = {
                let mut pages = pages.lock().unwrap_or_else(|e| e.into_inner());
                pages
                    .iter()
                    .position(|p| std::ptr::eq(Arc::as_ptr(&p.claimed.chain), page.as_ptr()))
                    .map(|at| pages.swap_remove(at))
            };
            drop(dropped);
        });
        Some(Reading {
            messages,
            served,
            chain,
        })
    }

    /// Pages read ahead and not yet asked for.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.pages.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(after: &str) -> pb::ChangesRequest {
        pb::ChangesRequest {
            exchange_id: "x-1".into(),
            dataset: "disdukcapil.penduduk".into(),
            columns: vec!["nik".into()],
            after: Some(pb::ChangePosition {
                change: "1".into(),
                key: after.into(),
            }),
            limit: 3,
            consumer: "dinsos".into(),
            purpose: "verifikasi".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn only_the_request_a_page_was_read_for_takes_it() {
        let ahead = ReadAhead::default();
        let reading = ahead.register(request("\"3201\"")).expect("a free place");
        assert!(
            ahead.register(request("\"3201\"")).is_none(),
            "one page per request"
        );
        let mut other = request("\"3201\"");
        other.consumer = "dinkes".into();
        assert!(ahead.claim(&other).is_none(), "another consumer");
        let mut other = request("\"3201\"");
        other.limit = 4;
        assert!(ahead.claim(&other).is_none(), "another limit");
        assert!(
            ahead.claim(&request("\"3202\"")).is_none(),
            "another position"
        );
        let mut claimed = ahead.claim(&request("\"3201\"")).expect("the same request");
        assert_eq!(ahead.waiting(), 0);
        assert!(ahead.claim(&request("\"3201\"")).is_none(), "taken once");
        reading
            .messages
            .send(Ok(pb::ChangesResponse::default()))
            .await
            .expect("the claim holds the receiver");
        assert!(claimed.messages.recv().await.is_some());
    }

    #[tokio::test]
    async fn at_most_a_few_pages_wait_at_once() {
        let ahead = ReadAhead::default();
        let held: Vec<Reading> = (0..PAGES)
            .map(|i| {
                ahead
                    .register(request(&format!("\"{i}\"")))
                    .expect("a free place")
            })
            .collect();
        assert!(
            ahead.register(request("\"last\"")).is_none(),
            "no place left"
        );
        // a page sent gives its place back
        let claimed = ahead.claim(&request("\"0\"")).expect("waiting");
        drop(claimed);
        assert!(ahead.register(request("\"last\"")).is_some());
        drop(held);
    }

    #[tokio::test]
    async fn a_page_nobody_asks_for_is_dropped_and_its_reading_stopped() {
        let ahead = ReadAhead::kept_for(Duration::from_millis(300));
        let reading = ahead.register(request("\"3201\"")).expect("a free place");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(ahead.waiting(), 1);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(ahead.waiting(), 0);
        assert!(
            reading.messages.is_closed(),
            "the reading sees it is stopped"
        );
        assert!(ahead.claim(&request("\"3201\"")).is_none());
    }

    #[test]
    fn the_next_page_is_read_once_the_page_is_read_and_asked_for() {
        // read through before it is asked for
        let chain = Chain::default();
        assert!(chain.full(request("\"3203\"")).is_none());
        assert_eq!(chain.asked(), Some(request("\"3203\"")));
        // asked for while it is read
        let chain = Chain::default();
        assert!(chain.asked().is_none());
        assert_eq!(chain.full(request("\"3203\"")), Some(request("\"3203\"")));
    }
}
