//! Webhook endpoints: where they may point, how many an owner may have, how they are listed,
//! and how long their delivery records are kept.

mod common;

use std::time::Duration;

use common::*;
use farthing_server::meta::{Table, Write};

/// Link-local and cloud metadata addresses, in the forms a URL can spell them.
const METADATA_URLS: [&str; 16] = [
    "http://169.254.169.254/latest/meta-data",
    "http://169.254.169.254./",
    "http://2852039166/",
    "http://0251.0376.0251.0376/",
    "http://0xa9fea9fe/",
    "http://0xA9.0xFE.0xA9.0xFE/",
    "http://[::169.254.169.254]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::169.254.169.254]/",
    "http://[2002:a9fe:a9fe::1]/",
    "http://[fe80::1%25eth0]/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "http://metadata.google.internal/",
    "http://METADATA.google.internal./computeMetadata/v1/",
    "http://metadata.goog./",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_addresses_are_refused_even_where_private_addresses_are_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.webhook_private_addresses = Some(true);
    let (server, admin) = start(cfg).await;
    let mut accepted = Vec::new();
    for url in METADATA_URLS {
        match admin.create_webhook(url, None).await {
            Ok(_) => accepted.push(url),
            Err(e) => assert_eq!(e.code(), Some("invalid_field"), "{url}"),
        }
    }
    assert!(accepted.is_empty(), "accepted: {accepted:?}");
    // Private and loopback addresses stay allowed in this mode.
    for url in
        ["http://127.0.0.1:9/hook", "http://[::1]:9/", "http://10.0.0.5/", "http://localhost./"]
    {
        admin.create_webhook(url, None).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_names_with_a_trailing_dot_are_refused_on_an_exposed_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.webhook_private_addresses = Some(false);
    let (server, admin) = start(cfg).await;
    let mut accepted = Vec::new();
    let internal = ["http://localhost./", "http://api.localhost./", "http://[::ffff:0:7f00:1]/"];
    for url in internal.into_iter().chain(METADATA_URLS) {
        if admin.create_webhook(url, None).await.is_ok() {
            accepted.push(url);
        }
    }
    assert!(accepted.is_empty(), "accepted: {accepted:?}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_has_at_most_webhooks_per_owner_max_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    let merchant = key(&admin, "merchant", Some("2001")).await;
    let max = farthing_server::Config::default().webhooks_per_owner_max;
    assert_eq!(max, 16);
    let mut ids = Vec::new();
    for _ in 0..max {
        ids.push(
            merchant.create_webhook("http://127.0.0.1:9/hook", None).await.unwrap()["id"].clone(),
        );
    }
    let err = merchant.create_webhook("http://127.0.0.1:9/hook", None).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(409), Some("too_many_webhooks")));
    // An admin registering for the same owner meets the same bound; other owners do not.
    let err = admin.create_webhook("http://127.0.0.1:9/hook", Some("2001")).await.unwrap_err();
    assert_eq!(err.code(), Some("too_many_webhooks"));
    admin.create_webhook("http://127.0.0.1:9/hook", Some("2002")).await.unwrap();
    // A removed endpoint makes room for another.
    let gone = ids[0].as_str().unwrap();
    assert_eq!(merchant.delete_raw(&format!("/v1/webhooks/{gone}")).await.unwrap().status, 200);
    merchant.create_webhook("http://127.0.0.1:9/hook", None).await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_list_is_paged_like_other_lists() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    let merchant = key(&admin, "merchant", Some("2001")).await;
    let mut made = Vec::new();
    for i in 0..5 {
        let url = format!("http://127.0.0.1:9/hook{i}");
        made.push(merchant.create_webhook(&url, None).await.unwrap()["id"].clone());
    }
    admin.create_webhook("http://127.0.0.1:9/other", Some("2002")).await.unwrap();
    let mut seen = Vec::new();
    let mut path = "/v1/webhooks?limit=2".to_string();
    loop {
        let page = merchant.get(&path).await.unwrap();
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2, "{page}");
        seen.extend(data.iter().map(|h| h["id"].clone()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/webhooks?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, made, "every endpoint once, in the order they were made");
    // An endpoint removed between pages neither repeats nor hides the others.
    let first = merchant.get("/v1/webhooks?limit=2").await.unwrap();
    let removed = made[1].as_str().unwrap();
    merchant.delete_raw(&format!("/v1/webhooks/{removed}")).await.unwrap();
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = merchant.get(&format!("/v1/webhooks?cursor={cursor}")).await.unwrap();
    let rest: Vec<_> = rest["data"].as_array().unwrap().iter().map(|h| h["id"].clone()).collect();
    assert_eq!(rest, made[2..].to_vec());
    let err = merchant.get("/v1/webhooks?limit=0").await.unwrap_err();
    assert_eq!(err.code(), Some("limit_out_of_range"));
    let err = merchant.get("/v1/webhooks?cursor=nonsense").await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_reads_no_delivery_record() {
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(config(dir.path())).await;
    seed(&admin).await;
    let (url, received, _) = receiver(0).await;
    admin.create_webhook(&url, Some("2001")).await.unwrap();
    // A record start would choke on if it read the delivery log (which may hold millions).
    let junk = Write::Put(Table::Deliveries, b"wh_0000/zz".to_vec(), b"not json".to_vec());
    server.state.meta.write(vec![junk]).await.unwrap();
    server.shutdown().await.unwrap();
    let (server, admin) = start(config(dir.path())).await;
    pay(&admin, "60", "1001", "2001", "1").await;
    assert!(eventually(5, || received.0.lock().unwrap().len() == 1).await, "delivered");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_deliveries_are_pruned_after_the_retention_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.webhook_deliveries_retention_s = 1;
    let (server, admin) = start(cfg).await;
    seed(&admin).await;
    let (url, received, _) = receiver(0).await;
    let hook = admin.create_webhook(&url, Some("2001")).await.unwrap();
    let id = hook["id"].as_str().unwrap();
    pay(&admin, "61", "1001", "2001", "1").await;
    assert!(eventually(5, || received.0.lock().unwrap().len() == 1).await, "delivered");
    assert_eq!(admin.deliveries(id).await.unwrap().as_array().unwrap().len(), 1);
    let mut pruned = false;
    for _ in 0..100 {
        if admin.deliveries(id).await.unwrap().as_array().unwrap().is_empty() {
            pruned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pruned, "the delivery record outlived its retention");
    server.shutdown().await.unwrap();
}

/// A resolver the test controls: fixed answers, and a count of the questions.
#[derive(Default)]
struct FakeDns {
    answers: std::collections::HashMap<String, Vec<std::net::IpAddr>>,
    asked: std::sync::Mutex<Vec<String>>,
}

impl farthing_server::webhooks::Resolve for FakeDns {
    fn lookup(
        &self,
        host: &str,
    ) -> futures_util::future::BoxFuture<'static, std::io::Result<Vec<std::net::IpAddr>>> {
        self.asked.lock().unwrap().push(host.to_string());
        let found = self.answers.get(host.trim_end_matches('.')).cloned();
        Box::pin(async move {
            found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such name"))
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_checked_where_they_resolve_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.webhook_private_addresses = Some(true);
    cfg.webhook_attempts_max = 1;
    let metadata: std::net::IpAddr = "169.254.169.254".parse().unwrap();
    let loopback: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let mut dns = FakeDns::default();
    dns.answers.insert("169.254.169.254.nip.io".into(), vec![metadata]);
    dns.answers.insert("mapped.test".into(), vec!["::ffff:169.254.169.254".parse().unwrap()]);
    dns.answers.insert("nat64.test".into(), vec!["64:ff9b::a9fe:a9fe".parse().unwrap()]);
    // The name answers a forbidden address first: the connection goes to the checked one.
    dns.answers.insert("hook.test".into(), vec![metadata, loopback]);
    let dns = std::sync::Arc::new(dns);
    let server =
        farthing_server::Server::start_with_resolver(cfg, Some(ADMIN_KEY.into()), dns.clone())
            .await
            .unwrap();
    let admin = farthing_client::Client::new(&server.url, ADMIN_KEY);
    seed(&admin).await;
    let (url, received, _) = receiver(0).await;
    let port = url.trim_start_matches("http://127.0.0.1:").trim_end_matches("/hook").to_string();
    let mut refused = Vec::new();
    for host in ["169.254.169.254.nip.io", "mapped.test", "nat64.test."] {
        let url = format!("http://{host}:{port}/hook");
        refused.push(admin.create_webhook(&url, Some("2001")).await.unwrap()["id"].clone());
    }
    let good = format!("http://hook.test:{port}/hook");
    admin.create_webhook(&good, Some("2001")).await.unwrap();
    pay(&admin, "62", "1001", "2001", "1").await;
    assert!(eventually(5, || received.0.lock().unwrap().len() == 1).await, "hook.test delivered");
    let host = received.0.lock().unwrap()[0].0["host"].to_str().unwrap().to_string();
    assert_eq!(host, format!("hook.test:{port}"));
    for id in refused {
        let id = id.as_str().unwrap();
        let mut error = String::new();
        for _ in 0..100 {
            let log = admin.deliveries(id).await.unwrap();
            if log[0]["state"] == "failed" {
                error = log[0]["attempts"][0]["error"].as_str().unwrap_or_default().to_string();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(error.contains("refused"), "{id}: {error:?}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(received.0.lock().unwrap().len(), 1);
    // Every name was looked up once, through the resolver the connection used.
    let mut asked = dns.asked.lock().unwrap().clone();
    asked.sort();
    assert_eq!(asked, ["169.254.169.254.nip.io", "hook.test", "mapped.test", "nat64.test."]);
    server.shutdown().await.unwrap();
}
