//! API keys and DNS-rebinding protection, as middleware.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;

/// Paths that never need a key (load balancers probe them).
pub const PUBLIC_PATHS: &[&str] = &["/health", "/v1/health"];

/// The accepted API keys; empty means no authentication.
#[derive(Clone, Default)]
pub struct ApiKeys(Arc<Vec<Vec<u8>>>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the keys themselves.
        write!(f, "ApiKeys({} key(s))", self.0.len())
    }
}

impl ApiKeys {
    /// Keys from the settings.
    pub fn new(keys: &[String]) -> Self {
        ApiKeys(Arc::new(keys.iter().map(|k| k.as_bytes().to_vec()).collect()))
    }

    /// Whether any key is configured.
    pub fn enabled(&self) -> bool {
        !self.0.is_empty()
    }

    /// Whether `candidate` is one of the keys. Every key is compared in full,
    /// in time that depends only on the lengths, so that timing does not
    /// reveal how much of a key matched or which key it was.
    pub fn accepts(&self, candidate: &[u8]) -> bool {
        let mut any = 0u8;
        for key in self.0.iter() {
            any |= constant_time_eq(key, candidate) as u8;
        }
        any == 1
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() != b.len()) as u8;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// The key a request carries: `Authorization: Bearer KEY` or `x-api-key: KEY`.
fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let bytes = value.as_bytes();
        let prefix = b"bearer ";
        if bytes.len() > prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix) {
            return Some(bytes[prefix.len()..].trim_ascii());
        }
    }
    headers.get("x-api-key").map(|v| v.as_bytes().trim_ascii())
}

/// Middleware: 401 unless the request carries a valid key (public paths and
/// CORS preflights excepted). The key is never logged.
pub async fn require_api_key(State(keys): State<ApiKeys>, req: Request, next: Next) -> Response {
    if !keys.enabled() || PUBLIC_PATHS.contains(&req.uri().path()) || req.method() == axum::http::Method::OPTIONS {
        return next.run(req).await;
    }
    match presented_key(req.headers()) {
        Some(key) if keys.accepts(key) => next.run(req).await,
        _ => AppError::Unauthorized.into_response(),
    }
}

/// Which `Host` headers are accepted.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// Check at all (only when bound to loopback, or with `--allowed-hosts`).
    enforce: bool,
    /// Extra names (lowercase, without port).
    allowed: Arc<Vec<String>>,
}

impl HostPolicy {
    /// A policy for a server bound to `bind`. When bound to loopback, only
    /// loopback names and `allowed` pass; otherwise only `allowed` does, if
    /// given. `"*"` in `allowed` turns the check off.
    pub fn new(bind: IpAddr, allowed: &[String]) -> Self {
        let any = allowed.iter().any(|h| h == "*");
        HostPolicy { enforce: !any && (bind.is_loopback() || !allowed.is_empty()), allowed: Arc::new(allowed.to_vec()) }
    }

    /// Whether a request with this `Host` header value may proceed.
    pub fn allows(&self, host: Option<&str>) -> bool {
        if !self.enforce {
            return true;
        }
        // HTTP/1.0 clients may omit Host; a browser (the rebinding vector) never does.
        let Some(host) = host else { return true };
        let name = strip_port(host).to_ascii_lowercase();
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        let bare = name.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>()
            && ip.is_loopback()
        {
            return true;
        }
        self.allowed.contains(&name)
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return match rest.find(']') {
            Some(end) => &host[..end + 2],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Middleware: 403 for a `Host` that is not allowed (DNS rebinding: a web
/// page whose domain now resolves to 127.0.0.1 must not reach this server).
pub async fn check_host(State(policy): State<HostPolicy>, req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| req.uri().host());
    if policy.allows(host) {
        next.run(req).await
    } else {
        AppError::Forbidden(format!(
            "Host {:?} is not allowed; use localhost or start the server with --allowed-hosts",
            host.unwrap_or("")
        ))
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_exactly() {
        let keys = ApiKeys::new(&["sk-one".into(), "sk-two".into()]);
        assert!(keys.enabled());
        assert!(keys.accepts(b"sk-one"));
        assert!(keys.accepts(b"sk-two"));
        assert!(!keys.accepts(b"sk-on"));
        assert!(!keys.accepts(b"sk-one "));
        assert!(!keys.accepts(b""));
        assert!(!keys.accepts(b"SK-ONE"));
        assert!(!ApiKeys::new(&[]).enabled());
        assert_eq!(format!("{keys:?}"), "ApiKeys(2 key(s))");
    }

    #[test]
    fn key_from_either_header() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer  abc ".parse().unwrap());
        assert_eq!(presented_key(&h), Some(&b"abc"[..]));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer xyz".parse().unwrap());
        assert_eq!(presented_key(&h), Some(&b"xyz"[..]));
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "k".parse().unwrap());
        assert_eq!(presented_key(&h), Some(&b"k"[..]));
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(presented_key(&h), None);
    }

    #[test]
    fn loopback_binding_accepts_only_local_names() {
        let p = HostPolicy::new("127.0.0.1".parse().unwrap(), &[]);
        for ok in ["localhost", "localhost:8080", "127.0.0.1:1234", "127.1.2.3", "[::1]:80", "[::1]", "api.localhost:9"]
        {
            assert!(p.allows(Some(ok)), "{ok}");
        }
        for bad in ["evil.com", "evil.com:8080", "127.0.0.1.evil.com", "localhost.evil.com", "10.0.0.1:80"] {
            assert!(!p.allows(Some(bad)), "{bad}");
        }
        assert!(p.allows(None));
        let p = HostPolicy::new("127.0.0.1".parse().unwrap(), &["my.box".into()]);
        assert!(p.allows(Some("my.box:8080")));
        let p = HostPolicy::new("127.0.0.1".parse().unwrap(), &["*".into()]);
        assert!(p.allows(Some("evil.com")));
    }

    #[test]
    fn public_binding_checks_only_when_asked() {
        let p = HostPolicy::new("0.0.0.0".parse().unwrap(), &[]);
        assert!(p.allows(Some("anything.example")));
        let p = HostPolicy::new("0.0.0.0".parse().unwrap(), &["srv.lan".into()]);
        assert!(p.allows(Some("srv.lan:80")));
        assert!(!p.allows(Some("other.lan")));
    }
}
