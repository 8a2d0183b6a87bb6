//! Regression tests for holes found in review: each was reproduced against an earlier build.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bound_keys_cannot_create_money() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let payer = key(&admin, "payer", Some("1001")).await;
    // An account a payer makes is a wallet: it cannot go below zero, whatever it asks for.
    let made = payer.create_account(&json!({"id": "5555", "asset": "USD"})).await.unwrap();
    assert_eq!(made["flags"], json!(["debits_must_not_exceed_credits"]));
    let err = payer
        .create_transfer(
            &json!({"debit_account_id": "5555", "credit_account_id": "2001", "amount": "1000000"}),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("exceeds_credits"));
    // An admin's unbounded account of the payer's owner is not the payer's to spend.
    admin.create_account(&json!({"id": "5556", "owner_id": "1001", "asset": "USD"})).await.unwrap();
    let err = payer
        .create_transfer(
            &json!({"debit_account_id": "5556", "credit_account_id": "2001", "amount": "1"}),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(403), Some("forbidden")));
    assert_eq!(admin.account("2001").await.unwrap()["balance"], "0.000000");
    // balancing_credit would tell how much another's account may still take.
    let err = payer
        .create_transfer(
            &json!({"debit_account_id": "1001", "credit_account_id": "1", "amount": "999",
                    "flags": ["balancing_credit"]}),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_are_released_only_by_the_payee() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let payer = key(&admin, "payer", Some("1001")).await;
    payer
        .create_transfer(
            &json!({"id": "70", "debit_account_id": "1001", "credit_account_id": "2001",
                                  "amount": "10", "pending": true}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        payer.post_raw("/v1/transfers/70/void", &json!({}), None).await.unwrap().status,
        403
    );
    let tiny = payer
        .post_raw("/v1/transfers/70/post", &json!({"amount": "0.000001"}), None)
        .await
        .unwrap();
    assert_eq!(tiny.status, 403);
    assert_eq!(payer.account("1001").await.unwrap()["debits_pending"], "10.000000");
    // In full, the payer may.
    let paid = payer.post_raw("/v1/transfers/70/post", &json!({}), None).await.unwrap();
    assert_eq!((paid.status, paid.body["amount"].as_str()), (201, Some("10.000000")));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_others_own_reveal_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let other = key(&admin, "payer", Some("1002")).await;
    // Transfer 9001 (house to 1001) exists; 1002's key reuses its id.
    let err = other
        .create_transfer(&json!({"id": "9001", "debit_account_id": "1002", "credit_account_id": "2001", "amount": "1"}), None)
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(409), Some("id_in_use")));
    let err = other.create_account(&json!({"id": "1001", "asset": "USD"})).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(409), Some("id_in_use")));
    let batch = other
        .create_transfers(&[json!({"id": "9001", "debit_account_id": "1002", "credit_account_id": "2001", "amount": "1"})])
        .await
        .unwrap();
    assert_eq!(batch["failed"][0]["code"], "id_in_use");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_ends_its_streams_and_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let made = admin.create_key(&json!({"role": "merchant", "owner_id": "2001"})).await.unwrap();
    let merchant = admin.with_key(made["key"].as_str().unwrap());
    let (url, received, _) = receiver(0).await;
    let hook = merchant.create_webhook(&url, None).await.unwrap();
    let mut stream = merchant.events(None).await.unwrap();
    pay(&admin, "80", "1001", "2001", "1").await;
    assert!(stream.next_within(Duration::from_secs(5)).await.unwrap().is_some());
    assert!(eventually(5, || received.0.lock().unwrap().len() == 1).await);
    let prefix = made["prefix"].as_str().unwrap();
    assert_eq!(admin.delete_raw(&format!("/v1/api-keys/{prefix}")).await.unwrap().status, 200);
    pay(&admin, "81", "1001", "2001", "1").await;
    assert!(
        stream.next_within(Duration::from_secs(3)).await.map_or(true, |e| e.is_none()),
        "a revoked key's stream carried an event"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(received.0.lock().unwrap().len(), 1, "a revoked key's webhook got an event");
    let hooks = admin.get("/v1/webhooks").await.unwrap();
    let h =
        hooks["data"].as_array().unwrap().iter().find(|h| h["id"] == hook["id"]).unwrap().clone();
    assert_eq!(h["enabled"], false);
    // The last working admin key cannot be revoked (nobody could make keys after).
    let me = admin.get("/v1/api-keys").await.unwrap();
    let admin_prefix =
        me["data"].as_array().unwrap().iter().find(|k| k["role"] == "admin").unwrap()["prefix"]
            .clone();
    let second = admin.create_key(&json!({"role": "admin"})).await.unwrap();
    let second = admin.with_key(second["key"].as_str().unwrap());
    let last = second
        .delete_raw(&format!("/v1/api-keys/{}", admin_prefix.as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(last.status, 200, "one of two admins may go");
    let refused = admin.delete_raw("/v1/api-keys/whatever").await.unwrap();
    assert_eq!(refused.status, 401, "the revoked admin key is refused");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merchant_keys_limited_to_accounts_get_no_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let made = admin
        .create_key(&json!({"role": "merchant", "owner_id": "2001", "accounts": ["2001"]}))
        .await
        .unwrap();
    let limited = admin.with_key(made["key"].as_str().unwrap());
    let err = limited.create_webhook("http://127.0.0.1:9/hook", None).await.unwrap_err();
    assert_eq!(err.status(), Some(403));
    // Nor can it read or remove the owner's webhooks (their deliveries carry every account).
    let full = key(&admin, "merchant", Some("2001")).await;
    let hook = full.create_webhook("http://127.0.0.1:9/hook", None).await.unwrap();
    let id = hook["id"].as_str().unwrap();
    assert_eq!(
        limited.get_raw(&format!("/v1/webhooks/{id}/deliveries")).await.unwrap().status,
        404
    );
    assert_eq!(limited.delete_raw(&format!("/v1/webhooks/{id}")).await.unwrap().status, 404);
    assert_eq!(limited.get("/v1/webhooks").await.unwrap()["data"].as_array().unwrap().len(), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_cannot_reach_internal_addresses_from_an_exposed_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.webhook_private_addresses = Some(false);
    let (server, admin) = start(cfg).await;
    seed(&admin).await;
    for url in [
        "http://127.0.0.1:6379/",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5/",
        "http://[::1]/",
        "http://localhost:8080/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
        "http://[64:ff9b::7f00:1]/",
        "http://[2002:7f00:1::]/",
        "http://198.18.0.1/",
    ] {
        let err = admin.create_webhook(url, None).await.unwrap_err();
        assert_eq!((err.status(), err.code()), (Some(400), Some("invalid_field")), "{url}");
    }
    server.shutdown().await.unwrap();
    // Cloud metadata (link-local) is refused even where private addresses are allowed.
    let (server, admin) = start(config(dir.path())).await;
    for url in [
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/",
        "http://metadata.google.internal/",
    ] {
        let err = admin.create_webhook(url, None).await.unwrap_err();
        assert_eq!(err.status(), Some(400), "{url}");
    }
    assert_eq!(
        admin.create_webhook("http://127.0.0.1:9/hook", None).await.unwrap()["enabled"],
        true
    );
    // A name is checked when it is resolved, at every attempt.
    let hook = admin.create_webhook("http://localtest.invalid:9/", None).await.unwrap();
    pay(&admin, "90", "1001", "2001", "1").await;
    let id = hook["id"].as_str().unwrap();
    let mut attempted = false;
    for _ in 0..100 {
        let log = admin.deliveries(id).await.unwrap();
        if log[0]["attempts"].as_array().is_some_and(|a| !a.is_empty()) {
            attempted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(attempted);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_names_the_same_transfer_even_without_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let body = json!({"debit_account_id": "1001", "credit_account_id": "2001", "amount": "1"});
    let first = admin.post_raw("/v1/transfers", &body, Some("pay-1")).await.unwrap();
    assert_eq!(first.status, 201);
    // Lose the record (as a crash between the commit and the record would): the retry
    // names the same transfer, which the ledger applies once.
    server
        .state
        .meta
        .write(vec![farthing_server::meta::Write::Delete(
            farthing_server::meta::Table::Idempotency,
            format!("{}:pay-1", &ADMIN_KEY[3..15]).into_bytes(),
        )])
        .await
        .unwrap();
    let retry = admin.post_raw("/v1/transfers", &body, Some("pay-1")).await.unwrap();
    assert_eq!(retry.headers["idempotent-replayed"], "false", "the record was gone");
    assert_eq!((retry.status, &retry.body["id"]), (200, &first.body["id"]));
    assert_eq!(admin.account("2001").await.unwrap()["balance"], "1.000000");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_problems_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let http = reqwest::Client::new();
    let last = http
        .get(format!("{}/v1/events", server.url))
        .bearer_auth(ADMIN_KEY)
        .header("last-event-id", u64::MAX.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(last.status(), 400);
    for path in ["/v1/accounts/%FF", "/v1/assets/%FF%FE", "/v1/transfers/%C3%28/receipt"] {
        let r =
            http.get(format!("{}{path}", server.url)).bearer_auth(ADMIN_KEY).send().await.unwrap();
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json", "{path}");
    }
    // A JSON array is not an object, even where its items would fill the fields in order.
    let r = http
        .post(format!("{}/v1/assets", server.url))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", "application/json")
        .body(r#"["TST", 2]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(admin.get("/v1/assets").await.unwrap()["data"].as_array().unwrap().len(), 1);
    // The scheme's name is case-insensitive.
    let lower = http
        .get(format!("{}/v1/assets", server.url))
        .header("authorization", format!("bearer {ADMIN_KEY}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lower.status(), 200);
    // Odd methods do not grow the metrics.
    for i in 0..5 {
        let m = reqwest::Method::from_bytes(format!("XMETHOD{i}").as_bytes()).unwrap();
        let _ = http.request(m, format!("{}/v1/assets", server.url)).send().await.unwrap();
    }
    let metrics = http
        .get(format!("{}/metrics", server.url))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("process_cpu_seconds_total"), "{metrics}");
    assert!(!metrics.contains("XMETHOD"));
    server.shutdown().await.unwrap();
}

/// The payee account's code is the merchant category that blocked-category rules judge it
/// by: a merchant key cannot choose it (nor a payer key); an admin key can.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merchant_cannot_choose_its_own_merchant_category() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let merchant = key(&admin, "merchant", Some("2001")).await;
    let body = json!({"id": "2002", "asset": "USD", "code": 5411});
    let refused = merchant.post("/v1/accounts", &body, None).await.unwrap_err();
    assert_eq!(refused.status(), Some(403));
    assert!(admin.get("/v1/accounts/2002").await.is_err(), "nothing was made");
    // Without a code, or with the default one, the merchant makes its account.
    let made =
        merchant.post("/v1/accounts", &json!({"id": "2002", "asset": "USD"}), None).await.unwrap();
    assert_eq!(made["code"], 1);
    let made = admin
        .post(
            "/v1/accounts",
            &json!({"id": "2003", "owner_id": "2001", "asset": "USD", "code": 5411}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(made["code"], 5411);
    // A merchant an admin put in a category cannot leave it by opening a new account.
    admin
        .post(
            "/v1/accounts",
            &json!({"id": "3001", "owner_id": "3001", "asset": "USD", "code": 7995}),
            None,
        )
        .await
        .unwrap();
    let betting = key(&admin, "merchant", Some("3001")).await;
    let fresh =
        betting.post("/v1/accounts", &json!({"id": "3002", "asset": "USD"}), None).await.unwrap();
    assert_eq!(fresh["code"], 7995, "the owner's category");
    server.shutdown().await.unwrap();
}

/// `/metrics` answers admin and auditor keys only; with `metrics_listen` set, it is served
/// there without a key, and no longer on the API's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_behind_a_key_or_on_their_own_address() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let http = reqwest::Client::new();
    let url = format!("{}/metrics", server.url);
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let payer = key(&admin, "payer", Some("1001")).await;
    assert_eq!(payer.get_text("/metrics").await.unwrap_err().status(), Some(403));
    let auditor = key(&admin, "auditor", None).await;
    assert!(auditor.get_text("/metrics").await.unwrap().contains("process_cpu_seconds_total"));
    server.shutdown().await.unwrap();

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cfg = farthing_server::Config { metrics_listen: Some(free), ..config(dir.path()) };
    let (server, admin) = start(cfg).await;
    let own = http.get(format!("http://{free}/metrics")).send().await.unwrap();
    assert_eq!(own.status(), 200);
    assert!(own.text().await.unwrap().contains("process_cpu_seconds_total"));
    assert_eq!(admin.get_text("/metrics").await.unwrap_err().status(), Some(404));
    server.shutdown().await.unwrap();
}

/// Browser clients of the allowed origins get CORS headers and their preflight answered;
/// other origins, and every origin when none is configured, get none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_the_allowed_origins_only() {
    let dir = tempfile::tempdir().unwrap();
    let shop = "https://shop.example";
    let cfg =
        farthing_server::Config { cors_allowed_origins: vec![shop.into()], ..config(dir.path()) };
    let (server, admin) = start(cfg).await;
    seed(&admin).await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/transfers", server.url);
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, &url)
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type,idempotency-key")
            .send()
    };
    let ok = preflight(shop).await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    assert_eq!(ok.headers()["access-control-allow-origin"], shop);
    let methods = ok.headers()["access-control-allow-methods"].to_str().unwrap().to_string();
    assert!(methods.contains("POST"), "{methods}");
    let headers = ok.headers()["access-control-allow-headers"].to_str().unwrap().to_lowercase();
    assert!(headers.contains("authorization") && headers.contains("idempotency-key"), "{headers}");
    let other = preflight("https://evil.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    // A real request from the shop's page carries the header too.
    let got = http
        .get(format!("{}/v1/accounts/1001", server.url))
        .bearer_auth(ADMIN_KEY)
        .header("origin", shop)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["access-control-allow-origin"], shop);
    server.shutdown().await.unwrap();

    // None configured: no CORS headers at all.
    let (server, _) = start(config(dir.path())).await;
    let got = http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/transfers", server.url))
        .header("origin", shop)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(got.headers().get("access-control-allow-origin").is_none());
    server.shutdown().await.unwrap();
    let bad = farthing_server::Config {
        cors_allowed_origins: vec!["shop.example/".into()],
        ..config(dir.path())
    };
    assert!(bad.validate().unwrap_err().contains("cors_allowed_origins"));
}
