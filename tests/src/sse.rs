//! The one server-sent-events parser of the suites and the benchmarks.
//!
//! An event ends at a blank line (`\n\n`, or `\r\n\r\n`); its payload is its
//! `data:` lines (one optional space after the colon dropped), joined with
//! `\n`. Events without a `data:` line (keep-alive comments) have none.
//!
//! - [`data`]: every payload of a whole body, in order.
//! - [`split_events`]: the raw framing, byte for byte (wire comparisons).
//! - [`Decoder`]: payloads as streamed bytes arrive.

/// Index just past the blank line that ends the first complete event in `buf`.
pub fn event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The complete events of `text`, each with its trailing blank line, and
/// what follows the last one (an unterminated event, or `""`).
pub fn split_events(text: &str) -> (Vec<&str>, &str) {
    let mut events = Vec::new();
    let mut rest = text;
    while let Some(end) = event_end(rest.as_bytes()) {
        events.push(&rest[..end]);
        rest = &rest[end..];
    }
    (events, rest)
}

/// The payload of one event: its `data:` lines joined with `\n`; `None`
/// when it has no `data:` line.
pub fn event_data(event: &str) -> Option<String> {
    let data: Vec<&str> =
        event.lines().filter_map(|l| l.strip_prefix("data:")).map(|d| d.strip_prefix(' ').unwrap_or(d)).collect();
    (!data.is_empty()).then(|| data.join("\n"))
}

/// The `data:` payloads of a server-sent-events body, in order (an
/// unterminated last event included).
pub fn data(text: &str) -> Vec<String> {
    let (events, rest) = split_events(text);
    events.into_iter().chain(std::iter::once(rest)).filter_map(event_data).collect()
}

/// An incremental parser: feed it bytes as they arrive, get the payloads of
/// the events they complete.
#[derive(Debug, Default)]
pub struct Decoder {
    pending: Vec<u8>,
}

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Add `bytes`; the payloads of the events completed by them, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some(end) = event_end(&self.pending) {
            let event: Vec<u8> = self.pending.drain(..end).collect();
            out.extend(event_data(&String::from_utf8_lossy(&event)));
        }
        out
    }

    /// The payload of an unterminated last event, once the stream has ended.
    pub fn finish(self) -> Option<String> {
        event_data(&String::from_utf8_lossy(&self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_boundaries() {
        assert_eq!(event_end(b"data: 1\n\ndata: 2"), Some(9));
        assert_eq!(event_end(b"data: 1\r\n\r\n"), Some(11));
        assert_eq!(event_end(b"data: 1\n"), None);
    }

    #[test]
    fn payloads() {
        let body = "data: {\"a\":1}\n\n: keep-alive\n\ndata:x\ndata: y\n\ndata: [DONE]\n\n";
        assert_eq!(data(body), ["{\"a\":1}", "x\ny", "[DONE]"]);
        assert_eq!(data("data: 1\r\n\r\ndata: 2"), ["1", "2"]);
        let (events, rest) = split_events("data: 1\n\n: c\n\ndata: 2");
        assert_eq!(events, ["data: 1\n\n", ": c\n\n"]);
        assert_eq!(rest, "data: 2");
    }

    #[test]
    fn decoder_across_chunks() {
        let mut d = Decoder::new();
        assert!(d.push(b"data: {\"a\"").is_empty());
        assert_eq!(d.push(b":1}\n\ndata: [DO"), ["{\"a\":1}"]);
        assert_eq!(d.push(b"NE]\n\n"), ["[DONE]"]);
        assert!(d.push(b"data: tail").is_empty());
        assert_eq!(d.finish().as_deref(), Some("tail"));
    }
}
