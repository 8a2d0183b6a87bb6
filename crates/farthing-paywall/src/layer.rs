//! The paywall as a tower [`Layer`], one per route and price.
//!
//! No `PAYMENT-SIGNATURE`: 402 with `PAYMENT-REQUIRED` (and the same JSON as the body). A
//! voucher taken: the inner service runs, and its response carries `PAYMENT-RESPONSE`. A
//! voucher refused: 402 again, the `error` being the refusal's code.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderValue, Request, StatusCode};
use tower::{Layer, Service};

use crate::paywall::{Paywall, Refused};
use crate::x402::{HEADER_REQUIRED, HEADER_RESPONSE, HEADER_SIGNATURE, PAYMENT_REQUIRED};

/// A paid route's terms: made by [`Paywall::layer`].
#[derive(Clone)]
pub struct PaidLayer {
    paywall: Paywall,
    terms: std::sync::Arc<Terms>,
}

struct Terms {
    price: u128,
    description: String,
    mime_type: String,
}

impl Paywall {
    /// A layer charging `price` minor units per request, described to the client as
    /// `description` (`text/html` unless [`PaidLayer::mime_type`] says otherwise).
    ///
    /// ```no_run
    /// # async fn demo(paywall: farthing_paywall::Paywall) {
    /// use axum::{routing::get, Router};
    /// let app: Router = Router::new()
    ///     .route("/articles/7", get(|| async { "..." }).layer(paywall.layer(100, "Article 7")));
    /// # }
    /// ```
    pub fn layer(&self, price: u128, description: &str) -> PaidLayer {
        let terms = Terms { price, description: description.into(), mime_type: "text/html".into() };
        PaidLayer { paywall: self.clone(), terms: std::sync::Arc::new(terms) }
    }
}

impl PaidLayer {
    pub fn mime_type(self, mime_type: &str) -> Self {
        let terms = Terms {
            price: self.terms.price,
            description: self.terms.description.clone(),
            mime_type: mime_type.into(),
        };
        Self { paywall: self.paywall, terms: std::sync::Arc::new(terms) }
    }
}

impl<S> Layer<S> for PaidLayer {
    type Service = PaidService<S>;
    fn layer(&self, inner: S) -> PaidService<S> {
        PaidService { inner, paywall: self.paywall.clone(), terms: self.terms.clone() }
    }
}

/// The paid route: see the module's documentation.
#[derive(Clone)]
pub struct PaidService<S> {
    inner: S,
    paywall: Paywall,
    terms: std::sync::Arc<Terms>,
}

impl<S> Service<Request<Body>> for PaidService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was made ready is the one to call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let paywall = self.paywall.clone();
        let terms = self.terms.clone();
        Box::pin(async move {
            let url = request.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
            let header = request.headers().get(HEADER_SIGNATURE).map(|h| h.to_str());
            let paid = match header {
                None => Err(Refused { code: PAYMENT_REQUIRED, detail: String::new() }),
                Some(Err(_)) => Err(Refused {
                    code: "payment_invalid",
                    detail: "PAYMENT-SIGNATURE is not visible ASCII".into(),
                }),
                Some(Ok(header)) => paywall.admit(header, terms.price).await,
            };
            match paid {
                Ok(receipt) => {
                    let mut response = inner.call(request).await?;
                    let value = HeaderValue::from_str(&receipt.to_header())
                        .expect("base64 is a valid header value");
                    response.headers_mut().insert(HEADER_RESPONSE, value);
                    Ok(response)
                }
                Err(refused) => Ok(payment_required(&paywall, &terms, &url, &refused)),
            }
        })
    }
}

fn payment_required(paywall: &Paywall, terms: &Terms, url: &str, refused: &Refused) -> Response {
    let required =
        paywall.required(url, &terms.description, &terms.mime_type, terms.price, refused.code);
    let status = if refused.code == "paywall_busy" || refused.code == "channel_unavailable" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::PAYMENT_REQUIRED
    };
    let mut body = serde_json::to_value(&required).expect("x402 shapes serialize");
    if !refused.detail.is_empty() {
        body["detail"] = refused.detail.clone().into();
    }
    Response::builder()
        .status(status)
        .header(HEADER_REQUIRED, required.to_header())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .expect("a 402 response builds")
}
