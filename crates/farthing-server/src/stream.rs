//! `GET /v1/events`: Server-Sent Events of committed transfers the caller may see.
//!
//! Each event's `id` is the transfer's commit position. A reader that reconnects with
//! `Last-Event-ID: N` (browsers do so by themselves) gets every event after N it may see,
//! read back from the ledger, then the live feed; `?from=N` starts at N. Without either,
//! the stream starts with the next commit.

use std::sync::Arc;

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures_util::stream::Stream;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;
use utoipa::IntoParams;

use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, Problem};
use crate::events::{event_type, read_range, Batch};
use crate::extract::ApiQuery;
use crate::model::TransferView;
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Start at this event id (commit position) instead of the next commit.
    pub from: Option<u64>,
}

#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(EventsQuery, ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses((status = 200, content_type = "text/event-stream", body = String,
               description = "event: transfer.created | transfer.pending | transfer.posted | transfer.voided; id: commit position; data: the transfer (JSON)"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn events(
    State(s): State<AppState>,
    Extension(p): Extension<Arc<Principal>>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let committed = s.hub.committed();
    let last = headers.get("last-event-id").map(|v| {
        v.to_str().ok().and_then(|t| t.trim().parse::<u64>().ok()).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_event_id",
                "Last-Event-ID must be an event id (a decimal number).",
            )
        })
    });
    let start = match (last.transpose()?, q.from) {
        (Some(id), _) => id.checked_add(1).ok_or_else(|| {
            ApiError::bad_request("invalid_event_id", "Last-Event-ID is beyond any event.")
        })?,
        (None, Some(from)) => from,
        (None, None) => committed,
    };
    if start > committed {
        return Err(ApiError::bad_request(
            "invalid_event_id",
            format!("No event {start} yet: {committed} have been committed."),
        ));
    }
    let Some(slot) = StreamSlot::take(&s, &p.prefix) else {
        let mut e = ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!(
                "This key has {} event streams open already; close one.",
                s.config.events_streams_per_key_max
            ),
        );
        e.retry_after_s = Some(1);
        return Err(e);
    };
    let (tx, rx) = mpsc::channel::<Event>(256);
    // Subscribe before reading back, so nothing falls between the two.
    let live = s.hub.subscribe();
    let state = s.clone();
    tokio::spawn(async move {
        state.metrics.sse_clients.fetch_add(1, Ordering::Relaxed);
        feed(&state, &p, start, live, &tx).await;
        state.metrics.sse_clients.fetch_sub(1, Ordering::Relaxed);
        drop(slot);
    });
    let stream = ReceiverStream::new(rx).map(Ok::<Event, Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(s.config.events_keepalive_s))))
}

/// Sends events from `next` on until the reader goes or the server stops.
async fn feed(
    s: &AppState,
    p: &Principal,
    mut next: u64,
    mut live: tokio::sync::broadcast::Receiver<Batch>,
    tx: &mpsc::Sender<Event>,
) {
    let mut stop = s.stop_signal();
    // A revoked key's stream ends within a second, even on a quiet ledger.
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        if *stop.borrow() || !s.keys.is_active(&p.prefix) {
            return;
        }
        // Catch up from the ledger while behind the durable count.
        let committed = s.hub.committed();
        if next < committed {
            let Ok(batch) = read_range(&s.engine, next, committed).await else { return };
            if !send(s, p, &batch, next, tx, &mut stop).await {
                return;
            }
            next = batch.first + batch.transfers.len() as u64;
            continue;
        }
        tokio::select! {
            received = live.recv() => match received {
                Ok(batch) => {
                    let end = batch.first + batch.transfers.len() as u64;
                    if batch.first > next || end <= next {
                        continue; // a gap (read back above) or already sent
                    }
                    if !send(s, p, &batch, next, tx, &mut stop).await {
                        return;
                    }
                    next = end;
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            },
            _ = check.tick() => continue,
            _ = stop.changed() => return,
            _ = tx.closed() => return,
        }
    }
}

/// Sends the visible events of `batch` from position `from`; false once the reader is gone
/// or the server stops.
async fn send(
    s: &AppState,
    p: &Principal,
    batch: &Batch,
    from: u64,
    tx: &mpsc::Sender<Event>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    if !s.keys.is_active(&p.prefix) {
        return false; // revoked since the stream began
    }
    for (i, t) in batch.transfers.iter().enumerate() {
        let index = batch.first + i as u64;
        if index < from {
            continue;
        }
        if !p.role.sees_all() {
            let [d, c] = s.directory.accounts([t.debit_account_id, t.credit_account_id]);
            let sees = d.is_some_and(|i| p.sees_account(t.debit_account_id, i.owner))
                || c.is_some_and(|i| p.sees_account(t.credit_account_id, i.owner));
            if !sees {
                continue;
            }
        }
        let (code, scale) = s.directory.asset_text(t.asset);
        let data = serde_json::to_string(&TransferView::new(t, &code, scale, None)).expect("json");
        let event = Event::default().id(index.to_string()).event(event_type(t)).data(data);
        tokio::select! {
            sent = tx.send(event) => if sent.is_err() { return false },
            _ = stop.changed() => return false,
        }
    }
    true
}

/// One of a key's open streams; counted while it lives.
struct StreamSlot {
    state: AppState,
    prefix: String,
}

impl StreamSlot {
    fn take(s: &AppState, prefix: &str) -> Option<Self> {
        let mut open = s.streams.lock().unwrap();
        let n = open.entry(prefix.to_string()).or_default();
        if *n >= s.config.events_streams_per_key_max {
            return None;
        }
        *n += 1;
        Some(Self { state: s.clone(), prefix: prefix.to_string() })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.state.streams.lock().unwrap();
        if let Some(n) = open.get_mut(&self.prefix) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.prefix);
            }
        }
    }
}
