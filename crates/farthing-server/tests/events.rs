//! Live events and webhooks, fed by the commit path: the stream, resuming it, what each
//! key may see; signed deliveries, retries, the delivery log, and both across a restart.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_is_live_resumable_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await; // events 0 (fund 1001) and 1 (fund 1002)
    let mut live = admin.events(None).await.unwrap();
    let payer = key(&admin, "payer", Some("1001")).await;
    let mut mine = payer.events(None).await.unwrap();
    for id in ["10", "11", "12"] {
        pay(&payer, id, "1001", "2001", "0.01").await;
    }
    pay(&admin, "13", "1", "1002", "1").await; // not payer 1001's business
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = live.next_within(WAIT).await.unwrap().expect("a live event");
        assert_eq!(e.kind, "transfer.created");
        seen.push((e.id.unwrap(), e.data["id"].as_str().unwrap().to_string()));
    }
    assert_eq!(seen, [(2, "10".into()), (3, "11".into()), (4, "12".into()), (5, "13".into())]);
    for want in ["10", "11", "12"] {
        let e = mine.next_within(WAIT).await.unwrap().expect("the payer's event");
        assert_eq!(e.data["id"], want);
        assert_eq!(e.data["amount"], "0.010000");
    }
    assert!(
        mine.next_within(Duration::from_millis(300)).await.unwrap().is_none(),
        "saw another's event"
    );
    // Resuming after event 2 replays 3.. from the ledger, then goes on live.
    let mut resumed = admin.events(Some(2)).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(resumed.next_within(WAIT).await.unwrap().unwrap().id.unwrap());
    }
    assert_eq!(got, [3, 4, 5]);
    let pending = payer
        .create_transfer(&json!({"id": "14", "debit_account_id": "1001", "credit_account_id": "2001", "amount": "2", "pending": true}), None)
        .await
        .unwrap();
    assert_eq!(pending["status"], "pending");
    let e = resumed.next_within(WAIT).await.unwrap().unwrap();
    assert_eq!((e.id, e.kind.as_str()), (Some(6), "transfer.pending"));
    // A payer replaying from the start sees only its own.
    let other = key(&admin, "payer", Some("1002")).await;
    let mut from_start = other.events(Some(0)).await.unwrap(); // after event 0
    let e = from_start.next_within(WAIT).await.unwrap().unwrap();
    assert_eq!((e.id, e.data["id"].as_str()), (Some(1), Some("9002")));
    let e = from_start.next_within(WAIT).await.unwrap().unwrap();
    assert_eq!((e.id, e.data["id"].as_str()), (Some(5), Some("13")));
    assert!(from_start.next_within(Duration::from_millis(300)).await.unwrap().is_none());
    // An id beyond the log is refused.
    let err = admin.events(Some(1_000)).await.err().unwrap();
    assert_eq!(err.code(), Some("invalid_event_id"));
    // Shutting down ends the streams (a graceful stop does not wait on them).
    server.shutdown().await.unwrap();
    assert!(
        live.next_within(WAIT).await.is_err() || live.next_within(WAIT).await.unwrap().is_none()
    );
    // After a restart, the same ids name the same events.
    let (server, admin) = start(config(dir.path())).await;
    let mut again = admin.events(Some(3)).await.unwrap();
    let e = again.next_within(WAIT).await.unwrap().unwrap();
    assert_eq!((e.id, e.data["id"].as_str()), (Some(4), Some("12")));
    server.shutdown().await.unwrap();
}

fn header<'a>(h: &'a axum::http::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_logged_and_scoped() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let (url, received, _) = receiver(2).await;
    let merchant = key(&admin, "merchant", Some("2001")).await;
    let hook = merchant.create_webhook(&url, None).await.unwrap();
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let hook_id = hook["id"].as_str().unwrap().to_string();
    pay(&admin, "20", "1", "1002", "1").await; // not the merchant's: no delivery
    pay(&admin, "21", "1001", "2001", "0.25").await;
    // Two failures, then success: three attempts of the same message.
    assert!(eventually(10, || received.0.lock().unwrap().len() >= 3).await, "three attempts");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = received.0.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "no more attempts after a success, none for others' events");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for (headers, body) in &got {
        assert_eq!(header(headers, "webhook-id"), "evt_3");
        farthing_client::webhook::verify(
            &secret,
            header(headers, "webhook-id"),
            header(headers, "webhook-timestamp"),
            header(headers, "webhook-signature"),
            body.as_bytes(),
            now,
            300,
        )
        .expect("signature verifies");
        // A tampered body or another secret does not.
        assert!(farthing_client::webhook::verify(
            &secret,
            "evt_3",
            header(headers, "webhook-timestamp"),
            header(headers, "webhook-signature"),
            b"{}",
            now,
            300
        )
        .is_err());
        let event: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(event["type"], "transfer.created");
        assert_eq!(event["data"]["id"], "21");
        assert_eq!(event["data"]["amount"], "0.250000");
    }
    let log = merchant.deliveries(&hook_id).await.unwrap();
    let d = &log[0];
    assert_eq!(d["state"], "succeeded");
    assert_eq!(d["event_id"], "evt_3");
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0]["status"], 500);
    assert_eq!(attempts[2]["status"], 200);
    // Another merchant sees neither the hook nor its log.
    let other = key(&admin, "merchant", Some("2002")).await;
    assert_eq!(
        other.get_raw(&format!("/v1/webhooks/{hook_id}/deliveries")).await.unwrap().status,
        404
    );
    assert_eq!(other.get("/v1/webhooks").await.unwrap()["data"].as_array().unwrap().len(), 0);
    // An admin may register for house accounts (owner 0) or for everything.
    assert_eq!(
        admin
            .post_raw("/v1/webhooks", &json!({"url": url, "owner_id": "0"}), None)
            .await
            .unwrap()
            .status,
        201
    );
    // Deleting the endpoint stops deliveries to it.
    assert_eq!(merchant.delete_raw(&format!("/v1/webhooks/{hook_id}")).await.unwrap().status, 200);
    pay(&admin, "22", "1001", "2001", "0.25").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<String> = received
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(h, _)| header(h, "webhook-id").to_string())
        .collect();
    assert!(!ids.contains(&"evt_4".to_string()), "delivered to a deleted endpoint: {ids:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.webhook_retry_base_ms = 200;
    let (server, admin) = start(cfg.clone()).await;
    seed(&admin).await;
    // The receiver is down (answers 500) for now.
    let (url, received, failures) = receiver(usize::MAX).await;
    let hook = admin.create_webhook(&url, Some("2001")).await.unwrap();
    let secret = hook["secret"].as_str().unwrap().to_string();
    pay(&admin, "30", "1001", "2001", "0.5").await;
    assert!(eventually(10, || !received.0.lock().unwrap().is_empty()).await, "a first attempt");
    server.shutdown().await.unwrap();
    // Events committed just before a stop are delivered after the restart, once.
    let (server, admin) = start(cfg.clone()).await;
    pay(&admin, "31", "1001", "2001", "0.5").await;
    server.shutdown().await.unwrap();
    *failures.lock().unwrap() = 0;
    let (server, admin) = start(cfg).await;
    let delivered = || {
        let got = received.0.lock().unwrap();
        let ids: std::collections::BTreeSet<String> =
            got.iter().map(|(h, _)| header(h, "webhook-id").to_string()).collect();
        ids.len() == 2
    };
    assert!(eventually(10, delivered).await, "both events delivered after the restart");
    let hook_id = hook["id"].as_str().unwrap();
    let mut all_succeeded = false;
    for _ in 0..50 {
        let log = admin.deliveries(hook_id).await.unwrap();
        if log.as_array().unwrap().iter().all(|d| d["state"] == "succeeded") {
            all_succeeded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(all_succeeded, "every delivery succeeded");
    let log = admin.deliveries(hook_id).await.unwrap();
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2, "one delivery per event, none doubled by the restarts: {log:?}");
    let first = log.iter().find(|d| d["payload"]["data"]["id"] == "30").unwrap();
    assert!(first["attempts"].as_array().unwrap().len() >= 2, "failed before, succeeded after");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let got = received.0.lock().unwrap().clone();
    let (h, body) = got.last().unwrap();
    farthing_client::webhook::verify(
        &secret,
        header(h, "webhook-id"),
        header(h, "webhook-timestamp"),
        header(h, "webhook-signature"),
        body.as_bytes(),
        now,
        300,
    )
    .unwrap();
    server.shutdown().await.unwrap();
}
