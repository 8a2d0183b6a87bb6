//! One bare HTTP/1.1 keep-alive connection: the least a client can spend per request, for
//! load generation (`farthing load`).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{HeaderMap, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    auth: String,
}

impl Connection {
    /// Connects to `host:port` (plain HTTP).
    pub async fn connect(host_port: &str, key: &str) -> Result<Self, String> {
        let tcp = TcpStream::connect(host_port).await.map_err(|e| format!("{host_port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(Self { sender, host: host_port.to_string(), auth: format!("Bearer {key}") })
    }

    /// POSTs a JSON body; returns the status and the body.
    pub async fn post_json(&mut self, path: &str, body: Bytes) -> Result<(u16, Bytes), String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let request = Request::post(path)
            .header("host", &self.host)
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let response = self.sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, body))
    }

    /// GETs `path` with `headers` (and no authorization); returns the status, the response's
    /// headers and its body.
    pub async fn get(
        &mut self,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
    ) -> Result<(u16, HeaderMap, Bytes), String> {
        self.sender.ready().await.map_err(|e| e.to_string())?;
        let mut request = Request::get(path)
            .header("host", &self.host)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        for (name, value) in headers {
            request.headers_mut().insert(name.clone(), value.clone());
        }
        let response = self.sender.send_request(request).await.map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((parts.status.as_u16(), parts.headers, body))
    }
}
