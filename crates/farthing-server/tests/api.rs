//! The REST API over real HTTP: a payment end to end, bad input, idempotency, and who may
//! do what (a matrix of roles × endpoints).

mod common;

use common::*;
use farthing_client::Client;
use farthing_tlog::note::NoteVerifier;
use farthing_tlog::proof::TlogProof;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_end_to_end_with_a_receipt_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let payer = key(&admin, "payer", Some("1001")).await;
    let paid = pay(&payer, "77", "1001", "2001", "0.0001").await;
    assert_eq!(paid["amount"], "0.000100");
    assert_eq!(paid["asset"], "USD");
    let account = payer.account("1001").await.unwrap();
    assert_eq!(account["balance"], "99.999900");
    assert_eq!(admin.account("2001").await.unwrap()["balance"], "0.000100");
    // The receipt verifies with the published key alone.
    let proof = payer.get_text("/v1/transfers/77/receipt?format=tlog-proof").await.unwrap();
    let key = NoteVerifier::parse(&payer.log_key().await.unwrap()).unwrap();
    let proof = TlogProof::parse(&proof).unwrap();
    proof.verify(&key).expect("receipt verifies");
    let json_receipt = payer.receipt("77").await.unwrap();
    assert_eq!(json_receipt["format"], "farthing-receipt/v1");
    assert_eq!(json_receipt["transfer"]["id"], "77");
    assert_eq!(json_receipt["transfer"]["amount_minor"], "100");
    // Lists, with cursors.
    let page = payer.get("/v1/accounts/1001/transfers?limit=1").await.unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap();
    let next =
        payer.get(&format!("/v1/accounts/1001/transfers?limit=1&cursor={cursor}")).await.unwrap();
    assert_eq!(next["data"][0]["id"], "77");
    let balances = payer.get("/v1/accounts/1001/balances").await.unwrap();
    assert_eq!(balances["data"].as_array().unwrap().len(), 2);
    let mine = payer.get("/v1/accounts").await.unwrap();
    assert_eq!(mine["data"][0]["id"], "1001");
    // A checkpoint covers everything answered before it.
    let note = payer.checkpoint().await.unwrap();
    let cp = farthing_tlog::checkpoint::Checkpoint::open(&note, &key).unwrap();
    assert_eq!(cp.size, 3);
    // Sending the same transfer again answers the one that exists (200), not a second one.
    let again = payer
        .post_raw(
            "/v1/transfers",
            &json!({"id": "77", "debit_account_id": "1001", "credit_account_id": "2001", "amount": "0.0001"}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(again.status, 200);
    assert_eq!(payer.account("1001").await.unwrap()["balance"], "99.999900");
    // Ledger refusals carry the ledger's code.
    let err = payer
        .create_transfer(
            &json!({"debit_account_id": "1001", "credit_account_id": "2001", "amount": "1000"}),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(422), Some("exceeds_credits")));
    // Holds: pending, then posted in part.
    let hold = pay_pending(&payer, "88", "2.5").await;
    assert_eq!(hold["status"], "pending");
    assert_eq!(payer.account("1001").await.unwrap()["available"], "97.499900");
    // The payer may pay a hold only in full (posting a millionth would release the rest);
    // the payee's merchant key captures part of it.
    let part =
        payer.post("/v1/transfers/88/post", &json!({"amount": "1"}), None).await.unwrap_err();
    assert_eq!((part.status(), part.code()), (Some(403), Some("forbidden")));
    let merchant = common::key(&admin, "merchant", Some("2001")).await;
    let posted =
        merchant.post("/v1/transfers/88/post", &json!({"amount": "1"}), None).await.unwrap();
    assert_eq!(posted["amount"], "1.000000");
    assert_eq!(payer.transfer("88").await.unwrap()["status"], "posted");
    assert_eq!(payer.account("1001").await.unwrap()["balance"], "98.999900");
    // A void answers the transfer as stored (the ledger fills it in from the hold).
    pay_pending(&payer, "89", "3").await;
    let voided = admin.post("/v1/transfers/89/void", &json!({"id": "90"}), None).await.unwrap();
    assert_eq!(
        (voided["amount"].as_str(), voided["asset"].as_str()),
        (Some("3.000000"), Some("USD"))
    );
    assert_eq!(voided["debit_account_id"], "1001");
    assert_eq!(voided["pending_id"], "89");
    assert_eq!(payer.transfer("89").await.unwrap()["status"], "voided");
    server.shutdown().await.unwrap();
}

async fn pay_pending(client: &Client, id: &str, amount: &str) -> Value {
    client
        .create_transfer(
            &json!({"id": id, "debit_account_id": "1001", "credit_account_id": "2001",
                    "amount": amount, "pending": true, "timeout_s": 3600}),
            None,
        )
        .await
        .unwrap()
}

/// Everything the ledger and the server's records hold that a request could change.
async fn fingerprint(admin: &Client) -> Value {
    let mut state = json!({});
    for id in ["1", "1001", "1002", "2001"] {
        state[id] = admin.account(id).await.unwrap();
        state[format!("{id}/transfers")] =
            admin.get(&format!("/v1/accounts/{id}/transfers")).await.unwrap();
    }
    state["assets"] = admin.get("/v1/assets").await.unwrap();
    state["keys"] = admin.get("/v1/api-keys").await.unwrap();
    state["webhooks"] = admin.get("/v1/webhooks").await.unwrap();
    state
}

/// What, path, content type, body, status, code, field.
type Case<'a> = (&'a str, &'a str, Option<&'a str>, String, u16, &'a str, Option<&'a str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_problem_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let before = fingerprint(&admin).await;
    // A fresh connection per request: answers such as 413 close theirs, and a pooled
    // connection the server has just closed would fail the next request by chance.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let url = |p: &str| format!("{}{p}", server.url);
    let payment = r#"{"debit_account_id":"1001","credit_account_id":"2001","amount":"0.5"}"#;
    let big = format!(
        r#"{{"debit_account_id":"1001","credit_account_id":"2001","amount":"0.5","user_data_64":"{}"}}"#,
        "1".repeat(100_000)
    );
    let items: Vec<String> = (0..8_191)
        .map(|_| {
            r#"{"debit_account_id":"1001","credit_account_id":"2001","amount":"0.01"}"#.to_string()
        })
        .collect();
    let too_many = format!(r#"{{"transfers":[{}]}}"#, items.join(","));
    let json_ct = "application/json";
    // (what, path, content type, body, status, code, field)
    let cases: Vec<Case> = vec![
        ("malformed JSON", "/v1/transfers", Some(json_ct), r#"{"debit_account_id": "1001","#.into(), 400, "malformed_json", None),
        ("a number for an amount", "/v1/transfers", Some(json_ct), r#"{"debit_account_id":"1001","credit_account_id":"2001","amount":0.5}"#.into(), 400, "invalid_field", Some("/amount")),
        ("a number for an id", "/v1/transfers", Some(json_ct), r#"{"id":5,"debit_account_id":"1001","credit_account_id":"2001","amount":"0.5"}"#.into(), 400, "invalid_field", Some("/id")),
        ("an unknown field", "/v1/transfers", Some(json_ct), r#"{"debit_account_id":"1001","credit_account_id":"2001","amount":"0.5","memo":"hi"}"#.into(), 400, "unknown_field", None),
        ("a missing field", "/v1/transfers", Some(json_ct), r#"{"debit_account_id":"1001","amount":"0.5"}"#.into(), 400, "missing_field", Some("/credit_account_id")),
        ("too many decimals", "/v1/transfers", Some(json_ct), r#"{"debit_account_id":"1001","credit_account_id":"2001","amount":"0.0000001"}"#.into(), 400, "invalid_field", Some("/amount")),
        ("a negative amount", "/v1/transfers", Some(json_ct), r#"{"debit_account_id":"1001","credit_account_id":"2001","amount":"-1"}"#.into(), 400, "invalid_field", Some("/amount")),
        ("a zero id", "/v1/transfers", Some(json_ct), r#"{"id":"0","debit_account_id":"1001","credit_account_id":"2001","amount":"1"}"#.into(), 400, "invalid_field", Some("/id")),
        ("a nested unknown field", "/v1/transfers/batch", Some(json_ct), r#"{"transfers":[{"debit_account_id":"1001","credit_account_id":"2001","amount":"1","x":1}]}"#.into(), 400, "unknown_field", Some("/transfers/0/x")),
        ("an empty batch", "/v1/transfers/batch", Some(json_ct), r#"{"transfers":[]}"#.into(), 400, "batch_size", Some("/transfers")),
        ("a batch over the limit", "/v1/transfers/batch", Some(json_ct), too_many, 400, "batch_size", Some("/transfers")),
        ("a bad item fails the whole batch", "/v1/transfers/batch", Some(json_ct), r#"{"transfers":[{"debit_account_id":"1001","credit_account_id":"2001","amount":"1"},{"debit_account_id":"1001","credit_account_id":"2001","amount":"x"}]}"#.into(), 400, "invalid_field", Some("/transfers/1/amount")),
        ("a body over the limit", "/v1/transfers", Some(json_ct), big, 413, "body_too_large", None),
        ("text/plain", "/v1/transfers", Some("text/plain"), payment.into(), 415, "unsupported_media_type", None),
        ("no content type", "/v1/transfers", None, payment.into(), 415, "unsupported_media_type", None),
        ("form data", "/v1/accounts", Some("application/x-www-form-urlencoded"), "id=5".into(), 415, "unsupported_media_type", None),
        ("an unknown account flag", "/v1/accounts", Some(json_ct), r#"{"owner_id":"5","asset":"USD","flags":["overdraft"]}"#.into(), 400, "invalid_field", Some("/flags")),
        ("an unknown asset", "/v1/accounts", Some(json_ct), r#"{"owner_id":"5","asset":"XYZ"}"#.into(), 422, "asset_not_found", None),
        ("an asset code the ledger refuses", "/v1/assets", Some(json_ct), r#"{"code":"us dollar","scale":2}"#.into(), 422, "code_invalid", None),
        ("a scale out of range", "/v1/assets", Some(json_ct), r#"{"code":"BIG","scale":300}"#.into(), 400, "invalid_field", Some("/scale")),
        ("an unknown role", "/v1/api-keys", Some(json_ct), r#"{"role":"owner"}"#.into(), 400, "invalid_field", Some("/role")),
        ("a payer key without owner", "/v1/api-keys", Some(json_ct), r#"{"role":"payer"}"#.into(), 400, "invalid_field", Some("/owner_id")),
        ("a webhook URL that is not http", "/v1/webhooks", Some(json_ct), r#"{"url":"ftp://example.com/x"}"#.into(), 400, "invalid_field", Some("/url")),
        ("a JSON array", "/v1/transfers", Some(json_ct), "[]".into(), 400, "invalid_body", None),
        ("a second document after the body", "/v1/transfers", Some(json_ct), format!("{payment}{payment}"), 400, "trailing_bytes", None),
        ("bytes after the body", "/v1/transfers", Some(json_ct), format!("{payment} x"), 400, "trailing_bytes", None),
    ];
    for (what, path, content_type, body, status, code, field) in cases {
        let mut request = http.post(url(path)).bearer_auth(ADMIN_KEY).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{what}: content type"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{what}: {problem}");
        assert_eq!(problem["status"], status, "{what}");
        assert_eq!(problem["type"], format!("/problems/{code}"), "{what}");
        assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()), "{what}");
        if let Some(field) = field {
            assert_eq!(problem["field"], field, "{what}: {problem}");
        }
    }
    // Queries and headers.
    let gets: Vec<(&str, &str, u16, &str)> = vec![
        ("a page size of 0", "/v1/accounts/1001/transfers?limit=0", 400, "limit_out_of_range"),
        (
            "a page size over the limit",
            "/v1/accounts/1001/transfers?limit=100000",
            400,
            "limit_out_of_range",
        ),
        ("a malformed id", "/v1/accounts/abc", 400, "invalid_field"),
        ("an unknown account", "/v1/accounts/424242", 404, "not_found"),
        ("an unknown route", "/v1/nothing", 404, "not_found"),
        ("an unknown query field", "/v1/accounts?owner=1", 400, "invalid_query"),
    ];
    for (what, path, status, code) in gets {
        let response = http.get(url(path)).bearer_auth(ADMIN_KEY).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert_eq!(response.headers()["content-type"], "application/problem+json", "{what}");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], code, "{what}: {problem}");
    }
    let no_key = http.get(url("/v1/accounts/1001")).send().await.unwrap();
    assert_eq!(no_key.status(), 401);
    assert_eq!(no_key.headers()["www-authenticate"], "Bearer");
    let wrong = http
        .get(url("/v1/accounts/1001"))
        .bearer_auth("fk_testadmin000000000000000000000000001")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let long_key = "k".repeat(300);
    let bad_idem = http
        .post(url("/v1/transfers"))
        .bearer_auth(ADMIN_KEY)
        .header("content-type", json_ct)
        .header("idempotency-key", long_key)
        .body(payment)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_idem.status(), 400);
    assert_eq!(fingerprint(&admin).await, before, "a refused request changed something");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_refuse_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let payer = key(&admin, "payer", Some("1001")).await;
    // No id in the body: only the Idempotency-Key stops a retry from paying twice.
    let body = json!({"debit_account_id": "1001", "credit_account_id": "2001", "amount": "1.25"});
    let first = payer.post_raw("/v1/transfers", &body, Some("order-1")).await.unwrap();
    assert_eq!(first.status, 201);
    assert_eq!(first.headers["idempotent-replayed"], "false");
    let again = payer.post_raw("/v1/transfers", &body, Some("order-1")).await.unwrap();
    assert_eq!(again.status, 201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body, "the same answer, the same server-chosen id");
    assert_eq!(payer.account("1001").await.unwrap()["balance"], "98.750000");
    // The same key with another request is refused, and nothing runs.
    let other = json!({"debit_account_id": "1001", "credit_account_id": "2001", "amount": "9"});
    let reused = payer.post_raw("/v1/transfers", &other, Some("order-1")).await.unwrap();
    assert_eq!(
        (reused.status, reused.body["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    assert_eq!(payer.account("1001").await.unwrap()["balance"], "98.750000");
    // Refusals are replayed too: the answer to a key does not change.
    let broke = json!({"debit_account_id": "1001", "credit_account_id": "2001", "amount": "5000"});
    let refused = payer.post_raw("/v1/transfers", &broke, Some("order-2")).await.unwrap();
    assert_eq!(refused.status, 422);
    admin
        .post(
            "/v1/transfers",
            &json!({"debit_account_id": "1", "credit_account_id": "1001", "amount": "10000"}),
            None,
        )
        .await
        .unwrap();
    let still = payer.post_raw("/v1/transfers", &broke, Some("order-2")).await.unwrap();
    assert_eq!((still.status, still.body.clone()), (422, refused.body.clone()));
    // The same request written differently (key order, spacing) is the same request.
    let reordered =
        r#"{ "amount": "1.25", "credit_account_id": "2001", "debit_account_id": "1001" }"#;
    let http = reqwest::Client::new();
    let replayed = http
        .post(format!("{}/v1/transfers", server.url))
        .bearer_auth(payer.key())
        .header("content-type", "application/json")
        .header("idempotency-key", "order-1")
        .body(reordered)
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    // Answers that show a secret once are never stored: a new key is not replayed, and the
    // server keeps no key in clear, anywhere.
    let made: Vec<String> = {
        let mut made = Vec::new();
        for _ in 0..2 {
            let a = admin
                .post_raw("/v1/api-keys", &json!({"role": "auditor"}), Some("key-1"))
                .await
                .unwrap();
            assert_eq!(a.status, 201);
            made.push(a.body["key"].as_str().unwrap().to_string());
        }
        made
    };
    assert_ne!(made[0], made[1]);
    // Keys are scoped to the API key that sent them.
    let payer2 = key(&admin, "payer", Some("1001")).await;
    let fresh = payer2.post_raw("/v1/transfers", &other, Some("order-1")).await.unwrap();
    assert_eq!(fresh.status, 201);
    let balance = payer.account("1001").await.unwrap()["balance"].clone();
    assert_eq!(balance, "10089.750000");
    // ...and kept across a restart.
    server.shutdown().await.unwrap();
    let stored = std::fs::read(dir.path().join("server.redb")).unwrap();
    for key in made.iter().map(String::as_str).chain([ADMIN_KEY, payer.key()]) {
        let secret = &key.as_bytes()[15..];
        assert!(
            !stored.windows(secret.len()).any(|w| w == secret),
            "a key's secret is stored in clear"
        );
    }
    let (server, admin) = start(config(dir.path())).await;
    let payer = admin.with_key(payer.key());
    let after = payer.post_raw("/v1/transfers", &body, Some("order-1")).await.unwrap();
    assert_eq!((after.status, &after.body), (201, &first.body));
    assert_eq!(after.headers["idempotent-replayed"], "true");
    assert_eq!(admin.account("1001").await.unwrap()["balance"], balance);
    server.shutdown().await.unwrap();
}

const ROLES: [&str; 5] = ["admin", "merchant", "payer", "auditor", "read_only"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_do_what_roles_by_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let clients = [
        admin.clone(),
        key(&admin, "merchant", Some("2001")).await,
        key(&admin, "payer", Some("1001")).await,
        key(&admin, "auditor", None).await,
        key(&admin, "read_only", Some("1001")).await,
    ];
    let stranger = key(&admin, "payer", Some("1002")).await;
    pay(&admin, "500", "1001", "2001", "1").await;
    for id in 600..610 {
        pay_pending(&admin, &id.to_string(), "0.5").await;
    }
    // Each row: method, path, body (a closure of the role's index, for unique ids and
    // codes), and the status each role gets, in the order of ROLES.
    type Body = fn(usize) -> Value;
    let none: Body = |_| Value::Null;
    let rows: Vec<(&str, String, Body, [u16; 5])> = vec![
        (
            "POST",
            "/v1/assets".into(),
            |i| json!({"code": format!("EUR{i}"), "scale": 2}),
            [201, 403, 403, 403, 403],
        ),
        ("GET", "/v1/assets".into(), none, [200; 5]),
        ("GET", "/v1/assets/USD".into(), none, [200; 5]),
        (
            "POST",
            "/v1/accounts".into(),
            |i| {
                let owner = ["0", "2001", "1001", "1001", "1001"][i];
                json!({"owner_id": owner, "asset": "USD"})
            },
            [201, 201, 201, 403, 403],
        ),
        (
            "POST",
            "/v1/accounts".into(),
            |_| json!({"owner_id": "7777", "asset": "USD"}),
            [201, 403, 403, 403, 403],
        ),
        ("GET", "/v1/accounts/1001".into(), none, [200, 404, 200, 200, 200]),
        ("GET", "/v1/accounts/2001".into(), none, [200, 200, 404, 200, 404]),
        ("GET", "/v1/accounts?owner_id=1001".into(), none, [200, 403, 200, 200, 200]),
        ("GET", "/v1/accounts/1001/transfers".into(), none, [200, 404, 200, 200, 200]),
        ("GET", "/v1/accounts/1001/balances".into(), none, [200, 404, 200, 200, 200]),
        (
            "POST",
            "/v1/transfers".into(),
            |_| json!({"debit_account_id": "1001", "credit_account_id": "2001", "amount": "0.01"}),
            [201, 422, 201, 403, 403],
        ),
        (
            "POST",
            "/v1/transfers".into(),
            |_| json!({"debit_account_id": "2001", "credit_account_id": "1001", "amount": "0.01"}),
            [201, 201, 422, 403, 403],
        ),
        (
            "POST",
            "/v1/transfers/batch".into(),
            |_| json!({"transfers": [{"debit_account_id": "1001", "credit_account_id": "2001", "amount": "0.01"}]}),
            [200, 422, 200, 403, 403],
        ),
        ("GET", "/v1/transfers/500".into(), none, [200; 5]),
        ("GET", "/v1/transfers/500/receipt".into(), none, [200; 5]),
        ("GET", "/v1/transfers/9001".into(), none, [200, 404, 200, 200, 200]),
        ("POST", "/v1/transfers/{pending}/post".into(), |_| json!({}), [201, 201, 201, 403, 403]),
        ("POST", "/v1/transfers/{pending2}/void".into(), |_| json!({}), [201, 201, 403, 403, 403]),
        ("GET", "/v1/log/checkpoint".into(), none, [200; 5]),
        ("GET", "/v1/log/consistency?old=1&new=2".into(), none, [200; 5]),
        ("GET", "/v1/log/key".into(), none, [200; 5]),
        ("POST", "/v1/api-keys".into(), |_| json!({"role": "auditor"}), [201, 403, 403, 403, 403]),
        ("GET", "/v1/api-keys".into(), none, [200, 403, 403, 403, 403]),
        (
            "POST",
            "/v1/webhooks".into(),
            |_| json!({"url": "http://127.0.0.1:9/hook"}),
            [201, 201, 403, 403, 403],
        ),
        ("GET", "/v1/webhooks".into(), none, [200, 200, 403, 403, 403]),
        ("GET", "/v1/events?from=0".into(), none, [200; 5]),
    ];
    let mut failures = Vec::new();
    for (method, path, body, expected) in &rows {
        for (i, client) in clients.iter().enumerate() {
            // Post and void each need a fresh pending transfer per role.
            let path = path
                .replace("{pending}", &(600 + i).to_string())
                .replace("{pending2}", &(605 + i).to_string());
            let status = match *method {
                "GET" if path.starts_with("/v1/events") => match client.events(None).await {
                    Ok(_) => 200,
                    Err(e) => e.status().unwrap_or(0),
                },
                "GET" => client.get_raw(&path).await.unwrap().status,
                _ => client.post_raw(&path, &body(i), None).await.unwrap().status,
            };
            if status != expected[i] {
                failures.push(format!(
                    "{method} {path} as {}: {status}, expected {}",
                    ROLES[i], expected[i]
                ));
            }
        }
        // A payer of another owner sees none of payer 1001's or merchant 2001's things.
        if path.contains("/1001") || path.contains("/500") || path.contains("2001") {
            let status = stranger.get_raw(path).await.unwrap().status;
            if *method == "GET" && status != 404 && status != 403 {
                failures.push(format!("GET {path} as another payer: {status}"));
            }
        }
    }
    assert!(failures.is_empty(), "authorization matrix:\n{}", failures.join("\n"));
    // Revoked keys stop at once; webhooks and deliveries of others are invisible.
    let made = admin.create_key(&json!({"role": "payer", "owner_id": "1001"})).await.unwrap();
    let prefix = made["prefix"].as_str().unwrap();
    let revoked = admin.with_key(made["key"].as_str().unwrap());
    assert_eq!(revoked.get_raw("/v1/accounts/1001").await.unwrap().status, 200);
    assert_eq!(admin.delete_raw(&format!("/v1/api-keys/{prefix}")).await.unwrap().status, 200);
    assert_eq!(revoked.get_raw("/v1/accounts/1001").await.unwrap().status, 401);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let made = admin
        .create_key(&json!({"role": "payer", "owner_id": "1001", "rate_limit_per_s": 2}))
        .await
        .unwrap();
    let limited = admin.with_key(made["key"].as_str().unwrap());
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let a = limited.get_raw("/v1/accounts/1001").await.unwrap();
        if a.status == 429 {
            assert_eq!(a.body["code"], "rate_limited");
            assert!(a.headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
        }
        statuses.push(a.status);
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
    // Other keys are not affected.
    assert_eq!(admin.get_raw("/v1/accounts/1001").await.unwrap().status, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    assert_eq!(limited.get_raw("/v1/accounts/1001").await.unwrap().status, 200);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_the_openapi_document() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let http = reqwest::Client::new();
    let get = |p: &str| http.get(format!("{}{p}", server.url)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    assert_eq!(get("/metrics").await.unwrap().status(), 401, "the metrics need a key");
    let metrics = admin.get_text("/metrics").await.unwrap();
    assert!(metrics.contains("farthing_transfers_accepted_total 2"), "{metrics}");
    assert!(metrics.contains("process_cpu_seconds_total"));
    assert!(metrics.contains(r#"route="/v1/transfers",status="201""#));
    let doc: Value = get("/openapi.json").await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/transfers",
        "/v1/transfers/batch",
        "/v1/events",
        "/v1/transfers/{id}/receipt",
        "/v1/webhooks",
    ] {
        assert!(paths.contains_key(p), "{p} missing from the OpenAPI document");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_when_a_certificate_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut cfg = config(&dir.path().join("data"));
    cfg.tls_cert = Some(cert_path);
    cfg.tls_key = Some(key_path);
    let server = farthing_server::Server::start(cfg, Some(ADMIN_KEY.into())).await.unwrap();
    assert!(server.url.starts_with("https://"));
    let url = server.url.replace("127.0.0.1", "localhost");
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let client = Client::with_http(http, &url, ADMIN_KEY);
    client.create_asset("USD", 2).await.expect("a request over TLS");
    assert_eq!(client.get("/v1/assets").await.unwrap()["data"][0]["code"], "USD");
    // Plain HTTP to the TLS port gets nowhere; an unknown certificate is refused.
    let plain = Client::new(&url.replace("https://", "http://"), ADMIN_KEY);
    assert!(plain.get("/v1/assets").await.is_err());
    let untrusting = Client::new(&url, ADMIN_KEY);
    assert!(untrusting.get("/v1/assets").await.is_err());
    server.shutdown().await.unwrap();
}

#[test]
fn configuration_from_a_file_then_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("farthing.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:9999\"\npage_size_max = 50\nrate_limit_per_s = 7\n",
    )
    .unwrap();
    let c = farthing_server::Config::load(Some(&file)).unwrap();
    assert_eq!((c.listen.port(), c.page_size_max, c.rate_limit_per_s), (9999, 50, 7));
    assert_eq!(c.body_bytes_max, 64 << 10, "defaults fill what the file leaves out");
    // SAFETY: this test is the only one in its process that reads or writes this variable.
    unsafe { std::env::set_var("FARTHING_PAGE_SIZE_MAX", "20") };
    let c = farthing_server::Config::load(Some(&file)).unwrap();
    unsafe { std::env::remove_var("FARTHING_PAGE_SIZE_MAX") };
    assert_eq!((c.listen.port(), c.page_size_max), (9999, 20));
    std::fs::write(&file, "page_size = 50\n").unwrap();
    let err = farthing_server::Config::load(Some(&file)).unwrap_err();
    assert!(err.contains("page_size"), "{err}");
    assert!(farthing_server::Config::load(Some(&dir.path().join("missing.toml"))).is_err());
    let bad = farthing_server::Config { idempotency_ttl_h: 1, ..Default::default() };
    assert!(bad.validate().unwrap_err().contains("idempotency_ttl_h"));
}

/// Past `connections_max`, the connection idle the longest is closed to make room; only
/// when every connection has a request in flight (here, event streams) does a new one wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_shed_the_idlest_or_wait_their_turn() {
    use farthing_client::raw::Connection;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let cfg = farthing_server::Config { connections_max: 2, ..config(dir.path()) };
    let (server, admin) = start(cfg).await;
    admin.create_asset("USD", 2).await.unwrap();
    drop(admin); // its pooled connection would hold a slot
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let addr = server.addr.to_string();
    let body = || bytes::Bytes::from_static(br#"{"code":"EUR","scale":2}"#);
    let mut first = Connection::connect(&addr, ADMIN_KEY).await.unwrap();
    let mut second = Connection::connect(&addr, ADMIN_KEY).await.unwrap();
    assert!(first.post_json("/v1/assets", body()).await.unwrap().0 < 300);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(second.post_json("/v1/assets", body()).await.unwrap().0 < 300);
    // Both idle: the third is served at once, and the first (idle longest) is closed.
    let mut third = Connection::connect(&addr, ADMIN_KEY).await.unwrap();
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        third.post_json("/v1/assets", body()),
    )
    .await
    .expect("served without waiting");
    assert_eq!(answer.unwrap().0, 200);
    assert!(first.post_json("/v1/assets", body()).await.is_err(), "the idlest was closed");
    drop((first, second, third));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Two event streams: both in flight, nothing to shed; a third connection waits.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut buf = [0u8; 256];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        streams.push(tcp);
    }
    let mut waiting_conn = Connection::connect(&addr, ADMIN_KEY).await.unwrap();
    let waiting = tokio::spawn(async move {
        let answer = waiting_conn
            .post_json("/v1/assets", bytes::Bytes::from_static(br#"{"code":"EUR","scale":2}"#))
            .await;
        (answer, waiting_conn)
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "a third connection was served past the limit of two");
    drop(streams.pop());
    let served = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await;
    let (answer, waiting_conn) = served.expect("served once a stream closed").unwrap();
    assert_eq!(answer.unwrap().0, 200);
    drop((streams, waiting_conn));
    server.shutdown().await.unwrap();
}

/// A body declared over the route's limit is refused before a byte of it is read, with an
/// Idempotency-Key as without: the server answers at once instead of waiting for it (or
/// buffering the batch route's 4 MiB for a route that takes 64 KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_over_the_limit_is_refused_before_it_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    // (route, declared length): one over the 64 KiB limit, one over the batch's 4 MiB.
    let cases = [("/v1/transfers", 100_000), ("/v1/transfers/batch", 5 << 20)];
    for ((path, length), idempotency) in
        cases.iter().flat_map(|c| [(c, ""), (c, "Idempotency-Key: big-1\r\n")])
    {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n{idempotency}\r\n{{"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 4096];
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut answer))
            .await
            .expect("answered without waiting for the body")
            .unwrap();
        let text = String::from_utf8_lossy(&answer[..read]);
        assert!(text.starts_with("HTTP/1.1 413"), "{path} {idempotency:?}: {text}");
        assert!(text.contains("body_too_large"), "{text}");
    }
    server.shutdown().await.unwrap();
}

/// Every list answers `{"data", "next_cursor"}` and pages with `limit` and `cursor`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_pages_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    admin.create_asset("EUR", 2).await.unwrap();
    admin.create_asset("GBP", 2).await.unwrap();
    for _ in 0..2 {
        key(&admin, "auditor", None).await;
    }
    let hook = admin.create_webhook("http://127.0.0.1:9/x", None).await.unwrap();
    let hook = hook["id"].as_str().unwrap().to_string();
    for list in [
        "/v1/assets".to_string(),
        "/v1/api-keys".into(),
        "/v1/risk/policy/versions".into(),
        "/v1/risk/audit".into(),
        format!("/v1/webhooks/{hook}/deliveries"),
        "/v1/accounts?owner_id=1001".into(),
    ] {
        let all = admin.get(&list).await.unwrap();
        let n = all["data"].as_array().unwrap_or_else(|| panic!("{list}: {all}")).len();
        let sep = if list.contains('?') { '&' } else { '?' };
        // One at a time, following the cursors: the same rows, each once.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = match &cursor {
                None => admin.get(&format!("{list}{sep}limit=1")).await.unwrap(),
                Some(c) => admin.get(&format!("{list}{sep}limit=1&cursor={c}")).await.unwrap(),
            };
            let data = page["data"].as_array().unwrap();
            assert!(data.len() <= 1, "{list}");
            seen.extend(data.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
            assert!(seen.len() <= n, "{list}: more rows than the whole list");
        }
        assert_eq!(seen, *all["data"].as_array().unwrap(), "{list}");
        assert_eq!(
            admin.get(&format!("{list}{sep}limit=0")).await.unwrap_err().code(),
            Some("limit_out_of_range"),
            "{list}"
        );
    }
    server.shutdown().await.unwrap();
}

/// With the risk engine on, a batch of moves it does not judge (from a house account) holds
/// up to 8,190; one with payments it judges, 4,095 (each travels with its decision), and a
/// larger one is refused whole, changing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_judged_payments_holds_half_the_engines_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let batch = |from: &str, n: usize| {
        let items: Vec<Value> = (0..n)
            .map(|_| json!({"debit_account_id": from, "credit_account_id": "1002", "amount": "0.000001"}))
            .collect();
        json!({ "transfers": items })
    };
    let house = admin.post("/v1/transfers/batch", &batch("1", 8_190), None).await.unwrap();
    assert_eq!(house["accepted"], 8_190, "house moves are not judged: the engine's bound");
    let before = admin.account("1001").await.unwrap();
    let refused = admin.post("/v1/transfers/batch", &batch("1001", 4_096), None).await.unwrap_err();
    assert_eq!(refused.code(), Some("batch_size"));
    assert_eq!(admin.account("1001").await.unwrap(), before, "nothing changed");
    let paid = admin.post("/v1/transfers/batch", &batch("1001", 4_095), None).await.unwrap();
    assert_eq!(paid["accepted"], 4_095);
    server.shutdown().await.unwrap();
}

/// A body that trickles in a byte at a time is cut off at its one deadline
/// (`http_body_read_timeout_ms`), however often a byte comes: 400 `body_unreadable`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_is_cut_off_at_its_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let cfg = farthing_server::Config { http_body_read_timeout_ms: 1_000, ..config(dir.path()) };
    let (server, admin) = start(cfg).await;
    seed(&admin).await;
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/assets HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let started = std::time::Instant::now();
    let (mut read, mut write) = tcp.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if write.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), read.read(&mut answer))
        .await
        .expect("answered at the deadline, not after the whole trickle")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("body_unreadable"), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    trickle.abort();
    server.shutdown().await.unwrap();
}
