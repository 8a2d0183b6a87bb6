//! `farthing webhooks listen`: a webhook endpoint for trying Farthing out. It prints each
//! delivery it receives and, given the endpoint's secret, whether its signature checks out
//! (Standard Webhooks: HMAC-SHA256 over `id.timestamp.body`, timestamp within 5 minutes).

use std::io::Write;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode};
use clap::Args;

/// Deliveries older or newer than this are refused as replays.
const TOLERANCE_S: u64 = 300;

#[derive(Args)]
pub struct ListenArgs {
    /// Address to listen on; the webhook's URL is http://<this>/ (any path).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// The endpoint's signing secret (whsec_...), as `POST /v1/webhooks` showed it. Without
    /// it, deliveries are printed unchecked.
    #[arg(long)]
    secret: Option<String>,
}

pub fn run(args: &ListenArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let secret = args.secret.clone();
    if let Some(secret) = &secret {
        farthing_client::webhook::check_secret(secret)?;
    }
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        say(&format!("listening for webhooks on http://{}/", args.listen));
        let receive = move |headers: HeaderMap, body: String| {
            let secret = secret.clone();
            async move { receive(secret.as_deref(), &headers, &body) }
        };
        let app = axum::Router::new().fallback(axum::routing::post(receive));
        axum::serve(listener, app).await.map_err(|e| e.to_string())
    })
}

fn receive(secret: Option<&str>, headers: &HeaderMap, body: &str) -> StatusCode {
    let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let (id, timestamp, signatures) =
        (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"));
    let (status, verdict) = match secret {
        None => (StatusCode::OK, "signature not checked (no --secret)".to_string()),
        Some(secret) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            match check(secret, id, timestamp, signatures, body, now) {
                Ok(()) => (StatusCode::OK, "signature verified".to_string()),
                Err(e) => (StatusCode::UNAUTHORIZED, format!("REFUSED: {e}")),
            }
        }
    };
    say(&format!("webhook {id} ({verdict}): {body}"));
    status
}

/// Checks a delivery's signature (in constant time) and age.
fn check(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &str,
    now: u64,
) -> Result<(), String> {
    farthing_client::webhook::verify(
        secret,
        id,
        timestamp,
        signatures,
        body.as_bytes(),
        now,
        TOLERANCE_S,
    )
}

/// One line to stdout, flushed (the output is often a file or a pipe).
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
