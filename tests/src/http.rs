//! A blocking HTTP/1.1 client that can send anything and stop anywhere.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// One request. `Host`, `Content-Length` and `Connection: close` are
/// added unless set explicitly.
#[derive(Debug, Clone)]
pub struct Request {
    /// Method, e.g. `POST`.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers in order; duplicates allowed.
    pub headers: Vec<(String, String)>,
    /// Body bytes, sent as they are.
    pub body: Vec<u8>,
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: &str, path: &str) -> Self {
        Request { method: method.into(), path: path.into(), headers: Vec::new(), body: Vec::new() }
    }

    /// `GET path`.
    pub fn get(path: &str) -> Self {
        Request::new("GET", path)
    }

    /// `POST path` with a JSON body.
    pub fn post_json(path: &str, body: &Value) -> Self {
        Request::post_raw(path, body.to_string().into_bytes())
    }

    /// `POST path` with these exact body bytes, labelled as JSON.
    pub fn post_raw(path: &str, body: impl Into<Vec<u8>>) -> Self {
        Request::new("POST", path).header("Content-Type", "application/json").body(body)
    }

    /// Add a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Set the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    fn has(&self, name: &str) -> bool {
        self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self, addr: SocketAddr) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        if !self.has("host") {
            head.push_str(&format!("Host: {addr}\r\n"));
        }
        if !self.has("content-length") && (!self.body.is_empty() || self.method == "POST") {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        if !self.has("connection") {
            head.push_str("Connection: close\r\n");
        }
        for (n, v) in &self.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilEof,
}

/// Status line and headers.
#[derive(Debug, Clone)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    framing: Framing,
}

impl Head {
    /// The first header of that name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status and headers.
    pub head: Head,
    /// The body (de-chunked).
    pub body: Vec<u8>,
    /// Whether the body ended properly (all of `Content-Length`, or the
    /// final zero-length chunk) rather than with the connection dropping.
    pub complete: bool,
    /// Time to the status line.
    pub time_to_head: Duration,
    /// Time to the end of the body.
    pub elapsed: Duration,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.head.status
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The `data:` payloads of a server-sent-events body, in order.
    pub fn sse_data(&self) -> Vec<String> {
        sse_data(&self.text())
    }

    /// A one-line description for assertion messages.
    pub fn describe(&self) -> String {
        let text = self.text();
        let cut: String = text.chars().take(300).collect();
        format!("{} (complete: {}) {cut}", self.head.status, self.complete)
    }
}

/// The `data:` payloads of a server-sent-events text, in order
/// ([`crate::sse::data`]).
pub fn sse_data(text: &str) -> Vec<String> {
    crate::sse::data(text)
}

/// One open connection.
#[derive(Debug)]
pub struct Conn {
    reader: BufReader<TcpStream>,
    addr: SocketAddr,
    started: Instant,
}

impl Conn {
    /// Connect with `timeout` for the connect and for every read and write.
    pub fn open(addr: SocketAddr, timeout: Duration) -> io::Result<Conn> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Conn { reader: BufReader::new(stream), addr, started: Instant::now() })
    }

    /// Wrap a stream connected by other means (e.g. with socket options set).
    pub fn from_stream(stream: TcpStream, timeout: Duration) -> io::Result<Conn> {
        let addr = stream.peer_addr()?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Conn { reader: BufReader::new(stream), addr, started: Instant::now() })
    }

    /// Change the per-read timeout.
    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.reader.get_ref().set_read_timeout(Some(timeout))
    }

    /// Write a request.
    pub fn send(&mut self, req: &Request) -> io::Result<()> {
        self.started = Instant::now();
        let bytes = req.to_bytes(self.addr);
        self.write_raw(&bytes)
    }

    /// Write raw bytes.
    pub fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let s = self.reader.get_mut();
        s.write_all(bytes)?;
        s.flush()
    }

    /// Read the status line and headers.
    pub fn read_head(&mut self) -> io::Result<Head> {
        let mut line = String::new();
        let mut head_bytes = 0usize;
        let mut read_line = |reader: &mut BufReader<TcpStream>, line: &mut String| -> io::Result<()> {
            line.clear();
            let n = reader.read_line(line)?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed in the response head"));
            }
            head_bytes += n;
            if head_bytes > 1 << 20 {
                return Err(io::Error::other("response head over 1 MiB"));
            }
            Ok(())
        };
        read_line(&mut self.reader, &mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            read_line(&mut self.reader, &mut line)?;
            let l = line.trim_end_matches(['\r', '\n']);
            if l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let framing = if get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            Framing::Chunked
        } else if let Some(len) = get("content-length").and_then(|v| v.parse().ok()) {
            Framing::Length(len)
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            Framing::Length(0)
        } else {
            Framing::UntilEof
        };
        Ok(Head { status, headers, framing })
    }

    /// Read the body to its end. `Ok((body, complete))`; an error or EOF
    /// part-way gives `complete == false` with what arrived.
    pub fn read_body(&mut self, head: &Head) -> (Vec<u8>, bool) {
        let mut body = Vec::new();
        let mut reader = BodyReader::new(head);
        loop {
            match reader.next_piece(self) {
                Ok(Some(piece)) => body.extend_from_slice(&piece),
                Ok(None) => return (body, true),
                Err(_) => return (body, false),
            }
        }
    }

    /// Time since the request was sent.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Close both directions now (a client hanging up).
    pub fn hang_up(self) {
        let _ = self.reader.get_ref().shutdown(std::net::Shutdown::Both);
    }
}

/// Reads a body piece by piece (one chunk at a time for chunked bodies).
#[derive(Debug)]
pub struct BodyReader {
    framing: Framing,
    done: bool,
}

impl BodyReader {
    /// A reader for the body that follows `head`.
    pub fn new(head: &Head) -> Self {
        BodyReader { framing: head.framing, done: false }
    }

    /// The next piece; `Ok(None)` once the body has properly ended.
    pub fn next_piece(&mut self, conn: &mut Conn) -> io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        let r = &mut conn.reader;
        match &mut self.framing {
            Framing::Length(remaining) => {
                if *remaining == 0 {
                    self.done = true;
                    return Ok(None);
                }
                let mut buf = vec![0u8; (*remaining).min(64 << 10)];
                let n = r.read(&mut buf)?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "body shorter than Content-Length"));
                }
                *remaining -= n;
                buf.truncate(n);
                Ok(Some(buf))
            }
            Framing::UntilEof => {
                let mut buf = vec![0u8; 64 << 10];
                let n = r.read(&mut buf)?;
                if n == 0 {
                    self.done = true;
                    return Ok(None);
                }
                buf.truncate(n);
                Ok(Some(buf))
            }
            Framing::Chunked => {
                let mut line = String::new();
                if r.read_line(&mut line)? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed between chunks"));
                }
                let size_text = line.trim().split(';').next().unwrap_or("");
                let size = usize::from_str_radix(size_text, 16)
                    .map_err(|_| io::Error::other(format!("bad chunk size line {line:?}")))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    loop {
                        line.clear();
                        if r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                            break;
                        }
                    }
                    self.done = true;
                    return Ok(None);
                }
                let mut buf = vec![0u8; size];
                r.read_exact(&mut buf)?;
                let mut crlf = [0u8; 2];
                r.read_exact(&mut crlf)?;
                Ok(Some(buf))
            }
        }
    }
}

/// Send `req` on a fresh connection and read the whole response.
/// `timeout` bounds each read and write, not the whole exchange.
pub fn send(addr: SocketAddr, req: &Request, timeout: Duration) -> io::Result<Response> {
    let mut conn = Conn::open(addr, timeout)?;
    conn.send(req)?;
    let head = conn.read_head()?;
    let time_to_head = conn.elapsed();
    let (body, complete) = conn.read_body(&head);
    Ok(Response { head, body, complete, time_to_head, elapsed: conn.elapsed() })
}
