//! Webhooks never go through an HTTP proxy, whatever the environment says: a proxy would
//! resolve the endpoint's name itself, past the address check. Alone in its test binary,
//! because the proxy variables are the whole process's.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;

const PROXY_VARIABLES: [&str; 6] =
    ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_ignore_proxy_settings() {
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = proxy.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
        }
    });
    for name in ["NO_PROXY", "no_proxy"] {
        std::env::remove_var(name);
    }
    for name in PROXY_VARIABLES {
        std::env::set_var(name, &proxy_url);
    }
    let dir = tempfile::tempdir().unwrap();
    let server =
        farthing_server::Server::start(config(dir.path()), Some(ADMIN_KEY.into())).await.unwrap();
    // The test's own client goes direct.
    for name in PROXY_VARIABLES {
        std::env::remove_var(name);
    }
    let admin = farthing_client::Client::new(&server.url, ADMIN_KEY);
    seed(&admin).await;
    let (url, received, _) = receiver(0).await;
    admin.create_webhook(&url, Some("2001")).await.unwrap();
    pay(&admin, "70", "1001", "2001", "1").await;
    let delivered = eventually(5, || received.0.lock().unwrap().len() == 1).await;
    assert_eq!(connections.load(Ordering::SeqCst), 0, "the proxy was asked");
    assert!(delivered, "the endpoint got the event directly");
    server.shutdown().await.unwrap();
}
