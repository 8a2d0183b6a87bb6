//! Attempts: the durable queue of deliveries waiting for one (`Table::DeliveryQueue`, keyed
//! by due time), the loop that starts them as they fall due, and what each attempt records.
//!
//! The queue is read from the store a window at a time, so neither start nor the loop ever
//! holds the delivery log (or the backlog of an endpoint that is down) in memory. An entry
//! leaves the queue in the same transaction as its delivery's outcome.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::address::check_host;
use super::{now_ms, Delivery, Webhook, CONCURRENT_ATTEMPTS};
use crate::auth::now_unix_s;
use crate::meta::{Table, Write};
use crate::receipt::utc;
use crate::state::AppState;

/// How long the loop sleeps with nothing queued (a new delivery wakes it sooner).
const IDLE_WAIT_MS: u64 = 3_600_000;
/// How long the loop waits after the store failed to answer.
const STORE_RETRY_MS: u64 = 1_000;

/// The queue entry of a delivery due at `due_ms`.
pub(super) fn entry(due_ms: u64, key: &[u8]) -> Vec<u8> {
    let mut e = due_ms.to_be_bytes().to_vec();
    e.extend_from_slice(key);
    e
}

fn split_entry(e: &[u8]) -> Option<(u64, &[u8])> {
    let (due, key) = e.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*due), key))
}

pub(super) fn put_record(key: &[u8], d: &Delivery) -> Write {
    Write::Put(Table::Deliveries, key.to_vec(), serde_json::to_vec(d).expect("json"))
}

/// Overwrites a record only while it is pending: an attempt that ends after its endpoint
/// was removed does not bring the delivery back.
fn put_record_if_pending(key: &[u8], d: &Delivery) -> Write {
    fn pending(old: &[u8]) -> bool {
        serde_json::from_slice::<Delivery>(old).is_ok_and(|d| d.state == "pending")
    }
    Write::PutIf(Table::Deliveries, key.to_vec(), serde_json::to_vec(d).expect("json"), pending)
}

/// Attempts deliveries as they fall due, a bounded number at a time.
pub async fn deliver(s: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_ATTEMPTS));
    loop {
        let next_due = start_due(&s, &permits).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "webhook queue failed; retrying");
            Some(now_ms() + STORE_RETRY_MS)
        });
        let wait_ms = next_due.map_or(IDLE_WAIT_MS, |t| t.saturating_sub(now_ms()));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
            _ = s.webhooks.wake.notified() => {}
            _ = stop.changed() => return,
        }
    }
}

/// Starts the due attempts that permits allow; answers when the next entry falls due (None:
/// nothing queued beyond what runs, or no permit left; a finishing attempt wakes the loop).
fn start_due(s: &AppState, permits: &Arc<tokio::sync::Semaphore>) -> Result<Option<u64>, String> {
    let now = now_ms();
    let mut in_flight = s.webhooks.in_flight.lock().unwrap();
    // Entries in flight stay queued until their outcome is written: read past them.
    let window = in_flight.len() + CONCURRENT_ATTEMPTS + 1;
    for (e, _) in s.meta.range(Table::DeliveryQueue, b"", window)? {
        let (due, key) = split_entry(&e).ok_or("a queue entry is shorter than its due time")?;
        if in_flight.contains(key) {
            continue;
        }
        if due > now {
            return Ok(Some(due));
        }
        let Ok(permit) = permits.clone().try_acquire_owned() else { return Ok(None) };
        in_flight.insert(key.to_vec());
        let (s, key) = (s.clone(), key.to_vec());
        tokio::spawn(async move {
            attempt(&s, due, &key).await;
            s.webhooks.in_flight.lock().unwrap().remove(&key);
            drop(permit);
            s.webhooks.wake.notify_one();
        });
    }
    Ok(None)
}

/// Writes changes, saying so if the store refused them (the entry stays queued: the
/// delivery is attempted again, at least once being the promise).
async fn write(s: &AppState, changes: Vec<Write>) {
    if let Err(e) = s.meta.write(changes).await {
        tracing::error!(error = %e, "webhook delivery record not saved");
    }
}

/// Marks a delivery failed for good, with the reason as its last attempt.
async fn give_up(s: &AppState, queued: Vec<u8>, key: &[u8], mut d: Delivery, reason: &str) {
    d.state = "failed".into();
    d.next_attempt_unix_ms = 0;
    d.attempts.push(super::Attempt {
        at: utc(now_ms() * 1_000_000),
        status: None,
        error: Some(reason.into()),
        took_ms: 0,
    });
    s.metrics.webhook_deliveries_failed.fetch_add(1, Ordering::Relaxed);
    write(s, vec![put_record_if_pending(key, &d), Write::Delete(Table::DeliveryQueue, queued)])
        .await;
}

/// The endpoint a pending delivery goes to, if it is still live.
fn live_hook(s: &AppState, webhook_id: &str) -> Option<Webhook> {
    let hooks = s.webhooks.hooks.lock().unwrap();
    let hook = hooks.iter().find(|h| h.id == webhook_id)?;
    (hook.enabled && !s.keys.revoked_merchant(&hook.created_by)).then(|| hook.clone())
}

async fn attempt(s: &AppState, due: u64, key: &[u8]) {
    let queued = entry(due, key);
    let record = s.meta.get(Table::Deliveries, key).ok().flatten();
    let d = record.and_then(|raw| serde_json::from_slice::<Delivery>(&raw).ok());
    let Some(d) = d.filter(|d| d.state == "pending" && d.next_attempt_unix_ms == due) else {
        // Finished, cancelled or gone since it was queued: the entry is stale.
        return write(s, vec![Write::Delete(Table::DeliveryQueue, queued)]).await;
    };
    let Some(hook) = live_hook(s, &d.webhook_id) else {
        return give_up(s, queued, key, d, "the endpoint was removed").await;
    };
    let url = match reqwest::Url::parse(&hook.url) {
        Ok(url) => url,
        Err(e) => return give_up(s, queued, key, d, &format!("the endpoint's URL: {e}")).await,
    };
    if let Err(refused) = check_host(&url, s.webhooks.reach) {
        return give_up(s, queued, key, d, &refused.to_string()).await;
    }
    let (status, error, took_ms) = send(s, &hook, &d).await;
    record_outcome(s, queued, key, d, status, error, took_ms).await;
}

/// One POST of the delivery: the endpoint's status if it answered, the error if it failed.
async fn send(s: &AppState, hook: &Webhook, d: &Delivery) -> (Option<u16>, Option<String>, u64) {
    let body = serde_json::to_string(&d.payload).expect("json");
    let ts = now_unix_s();
    let signature = super::sign(&hook.secret, &d.event_id, ts, &body).unwrap_or_default();
    let started = std::time::Instant::now();
    let result = s
        .webhooks
        .client
        .post(&hook.url)
        .header("content-type", "application/json")
        .header("user-agent", "farthing-webhooks/1")
        .header("webhook-id", &d.event_id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", signature)
        .body(body)
        .send()
        .await;
    let took_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None, took_ms),
        Ok(r) => {
            let error = format!("the endpoint answered {}", r.status());
            (Some(r.status().as_u16()), Some(error), took_ms)
        }
        Err(e) => (None, Some(error_chain(&e)), took_ms),
    }
}

/// Records an attempt's outcome and, if another is due, queues it, in one transaction.
async fn record_outcome(
    s: &AppState,
    queued: Vec<u8>,
    key: &[u8],
    mut d: Delivery,
    status: Option<u16>,
    error: Option<String>,
    took_ms: u64,
) {
    let failed = error.is_some();
    let at = utc(now_ms() * 1_000_000);
    d.attempts.push(super::Attempt { at, status, error, took_ms });
    let cfg = &s.config;
    let m = &s.metrics;
    if !failed {
        d.state = "succeeded".into();
        d.next_attempt_unix_ms = 0;
        m.webhook_deliveries_ok.fetch_add(1, Ordering::Relaxed);
    } else if d.attempts.len() as u32 >= cfg.webhook_attempts_max {
        d.state = "failed".into();
        d.next_attempt_unix_ms = 0;
        m.webhook_attempts_failed.fetch_add(1, Ordering::Relaxed);
        m.webhook_deliveries_failed.fetch_add(1, Ordering::Relaxed);
    } else {
        m.webhook_attempts_failed.fetch_add(1, Ordering::Relaxed);
        let exp = (d.attempts.len() as u32 - 1).min(30);
        let backoff =
            cfg.webhook_retry_base_ms.saturating_mul(1 << exp).min(cfg.webhook_retry_max_ms);
        d.next_attempt_unix_ms = now_ms() + backoff;
    }
    let mut changes =
        vec![put_record_if_pending(key, &d), Write::Delete(Table::DeliveryQueue, queued)];
    if d.state == "pending" {
        changes.push(Write::Put(Table::DeliveryQueue, entry(d.next_attempt_unix_ms, key), vec![]));
    }
    write(s, changes).await;
}

/// An error and its causes ("error sending request: ... : Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
