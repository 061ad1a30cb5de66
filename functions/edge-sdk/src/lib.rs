//! Guest-side SDK for the edge-runner `edge` ABI (docs/abi.md).
//!
//! Reference and usage (dependency forms, every item, crates that build with
//! the toolchain): docs/sdk.md.
//!
//! A function crate (`crate-type = ["cdylib"]`, target `wasm32-wasi`) writes a
//! handler and plugs it in with [`edge_main!`]:
//!
//! ```ignore
//! use edge_sdk::{Request, Response};
//!
//! fn handle(req: &Request) -> Response {
//!     Response::text(200, format!("you asked for {}", req.path))
//! }
//!
//! edge_sdk::edge_main!(handle);
//! ```
//!
//! The macro defines the two exports the runner calls:
//!
//! * `edge_alloc(size: i32) -> i32` returns a buffer of `size` bytes for the
//!   host to write a request envelope into (0 if the guest is out of memory).
//!   Buffers are owned by the SDK: every `edge_handle` call releases all
//!   buffers handed out since the previous call.
//! * `edge_handle(ptr: i32, len: i32) -> i64` decodes the request envelope,
//!   calls the handler and returns `(resp_ptr << 32) | resp_len` of the
//!   encoded response, which stays valid until the next call into the SDK.
//!
//! Wire format (all integers little-endian `u32`, a *string* is `u32 len` +
//! bytes):
//!
//! ```text
//! request  = version(=1) method path query param_count {name value}*
//!            header_count {name value}* body
//! response = status header_count {name value}* body
//! ```
//!
//! Decoding never panics: a malformed envelope is answered with a
//! `400 Bad Request` response (plain text) without calling the handler.

use std::cell::RefCell;
use std::fmt;

/// The only request envelope version this SDK understands.
pub const ENVELOPE_VERSION: u32 = 1;

/// A decoded HTTP request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Request method as sent by the client, e.g. `GET`.
    pub method: String,
    /// Raw path without the query string, e.g. `/hello`.
    pub path: String,
    /// Raw query string without the leading `?` (may be empty).
    pub query: String,
    /// Template captures of the matching route (`/users/{id}` -> `id`).
    pub params: Vec<(String, String)>,
    /// Request headers; names are lower-case.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
}

impl Request {
    /// First value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// All values of header `name` (compared case-insensitively).
    pub fn header_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Route template capture `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All query parameters, percent-decoded (`+` is a space).
    pub fn query_params(&self) -> Vec<(String, String)> {
        parse_query(&self.query)
    }

    /// First value of query parameter `name`, percent-decoded. A key without
    /// `=` (e.g. `?flag`) yields `Some("")`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        parse_query(&self.query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The body as UTF-8, if it is valid UTF-8.
    pub fn body_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }
}

/// An HTTP response built by the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Response headers. Names added through the builders are lower-case.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

impl Default for Response {
    fn default() -> Self {
        Response::new(200)
    }
}

impl Response {
    /// An empty response with `status` and no headers. Without a
    /// `content-type` header the host detects one from the body.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response::new(status)
            .with_header("content-type", "text/plain; charset=utf-8")
            .with_body(body.into().into_bytes())
    }

    /// An `application/json` response; `body` must already be serialised JSON.
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response::new(status)
            .with_header("content-type", "application/json")
            .with_body(body)
    }

    /// A response with raw bytes and an explicit content type.
    pub fn bytes(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Response::new(status)
            .with_header("content-type", content_type)
            .with_body(body)
    }

    /// Adds a header (name lower-cased). Existing headers of that name are kept.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Replaces every header of that name (case-insensitive) with one value.
    pub fn set_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.with_header(name, value)
    }

    /// Replaces the status code.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// First value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

// ---------------------------------------------------------------------------
// Codec
// ---------------------------------------------------------------------------

/// Why a request envelope could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The envelope ended in the middle of `what`.
    Truncated(&'static str),
    /// The envelope version is not [`ENVELOPE_VERSION`].
    UnsupportedVersion(u32),
    /// Bytes were left over after the body.
    TrailingBytes(usize),
    /// The buffer passed to `edge_handle` was not handed out by `edge_alloc`.
    UnknownBuffer,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated(what) => write!(f, "request envelope truncated in {}", what),
            DecodeError::UnsupportedVersion(v) => {
                write!(f, "unsupported request envelope version {} (expected {})", v, ENVELOPE_VERSION)
            }
            DecodeError::TrailingBytes(n) => {
                write!(f, "request envelope has {} trailing bytes after the body", n)
            }
            DecodeError::UnknownBuffer => {
                write!(f, "request envelope is not inside a buffer returned by edge_alloc")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated(what))?;
        if end > self.buf.len() {
            return Err(DecodeError::Truncated(what));
        }
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn bytes(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }

    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        // Invalid UTF-8 (e.g. obs-text in a header value) is replaced rather
        // than rejected: a lossy value is more useful to a handler than a 400.
        Ok(String::from_utf8_lossy(self.bytes(what)?).into_owned())
    }

    fn pairs(&mut self, what: &'static str) -> Result<Vec<(String, String)>, DecodeError> {
        let count = self.u32(what)? as usize;
        // Every pair needs at least 8 bytes; never trust `count` for capacity.
        let remaining = self.buf.len() - self.pos;
        if count > remaining / 8 {
            return Err(DecodeError::Truncated(what));
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let name = self.string(what)?;
            let value = self.string(what)?;
            out.push((name, value));
        }
        Ok(out)
    }
}

/// Decodes a request envelope. Never panics.
pub fn decode_request(buf: &[u8]) -> Result<Request, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let version = r.u32("version")?;
    if version != ENVELOPE_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let method = r.string("method")?;
    let path = r.string("path")?;
    let query = r.string("query")?;
    let params = r.pairs("params")?;
    let headers = r.pairs("headers")?;
    let body = r.bytes("body")?.to_vec();
    if r.pos != buf.len() {
        return Err(DecodeError::TrailingBytes(buf.len() - r.pos));
    }
    Ok(Request {
        method,
        path,
        query,
        params,
        headers,
        body,
    })
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

fn put_pairs(out: &mut Vec<u8>, pairs: &[(String, String)]) {
    put_u32(out, pairs.len() as u32);
    for (n, v) in pairs {
        put_bytes(out, n.as_bytes());
        put_bytes(out, v.as_bytes());
    }
}

/// Encodes a request envelope (the host's job; useful for tests and tools).
pub fn encode_request(req: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    put_u32(&mut out, ENVELOPE_VERSION);
    put_bytes(&mut out, req.method.as_bytes());
    put_bytes(&mut out, req.path.as_bytes());
    put_bytes(&mut out, req.query.as_bytes());
    put_pairs(&mut out, &req.params);
    put_pairs(&mut out, &req.headers);
    put_bytes(&mut out, &req.body);
    out
}

/// Encodes a response envelope into `out` (cleared first, capacity reused).
pub fn encode_response_into(resp: &Response, out: &mut Vec<u8>) {
    out.clear();
    put_u32(out, u32::from(resp.status));
    put_pairs(out, &resp.headers);
    put_bytes(out, &resp.body);
}

/// Encodes a response envelope.
pub fn encode_response(resp: &Response) -> Vec<u8> {
    let mut out = Vec::new();
    encode_response_into(resp, &mut out);
    out
}

/// Decodes a response envelope (the host's job; useful for tests and tools).
pub fn decode_response(buf: &[u8]) -> Result<Response, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let status = r.u32("status")?;
    let headers = r.pairs("headers")?;
    let body = r.bytes("body")?.to_vec();
    if r.pos != buf.len() {
        return Err(DecodeError::TrailingBytes(buf.len() - r.pos));
    }
    Ok(Response {
        status: status.min(u32::from(u16::MAX)) as u16,
        headers,
        body,
    })
}

// ---------------------------------------------------------------------------
// Query strings
// ---------------------------------------------------------------------------

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes `s` as in `application/x-www-form-urlencoded`: `+` becomes
/// a space, `%XX` a byte; malformed escapes are kept literally and invalid
/// UTF-8 is replaced with U+FFFD.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < b.len() => {
                match (hex_val(b[i + 1]), hex_val(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push(h << 4 | l);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a raw query string into percent-decoded `(name, value)` pairs.
/// Empty segments (`a=1&&b=2`) are skipped.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|seg| !seg.is_empty())
        .map(|seg| match seg.find('=') {
            Some(eq) => (percent_decode(&seg[..eq]), percent_decode(&seg[eq + 1..])),
            None => (percent_decode(seg), String::new()),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Exports glue (used by `edge_main!`)
// ---------------------------------------------------------------------------

thread_local! {
    /// Buffers handed out by `edge_alloc` since the last `edge_handle`.
    static REQUEST_BUFFERS: RefCell<Vec<Vec<u8>>> = RefCell::new(Vec::new());
    /// The last encoded response; valid until the next `edge_handle`.
    static RESPONSE: RefCell<Vec<u8>> = RefCell::new(Vec::new());
}

/// Implementation of the `edge_alloc` export. Returns 0 when out of memory.
#[doc(hidden)]
pub fn __edge_alloc(size: i32) -> i32 {
    let size = size as u32 as usize;
    let mut buf: Vec<u8> = Vec::new();
    if buf.try_reserve_exact(size.max(1)).is_err() {
        return 0;
    }
    buf.resize(size, 0);
    let ptr = buf.as_mut_ptr() as usize;
    REQUEST_BUFFERS.with(|bufs| bufs.borrow_mut().push(buf));
    ptr as i32
}

/// Finds the `edge_alloc` buffer containing `[ptr, ptr+len)` and decodes it,
/// then releases every outstanding request buffer.
fn take_request(ptr: i32, len: i32) -> Result<Request, DecodeError> {
    let start = ptr as u32 as usize;
    let len = len as u32 as usize;
    REQUEST_BUFFERS.with(|bufs| {
        let mut bufs = bufs.borrow_mut();
        let result = bufs
            .iter()
            .find_map(|b| {
                let base = b.as_ptr() as usize;
                let end = start.checked_add(len)?;
                if start >= base && end <= base + b.len() {
                    Some(&b[start - base..end - base])
                } else {
                    None
                }
            })
            .ok_or(DecodeError::UnknownBuffer)
            .and_then(decode_request);
        bufs.clear();
        if bufs.capacity() > 16 {
            bufs.shrink_to(16);
        }
        result
    })
}

/// Runs `handler` on a decoded request and returns the packed response
/// pointer/length; the response stays valid until the next call.
pub fn dispatch<F>(ptr: i32, len: i32, handler: F) -> i64
where
    F: FnOnce(&Request) -> Response,
{
    let resp = match take_request(ptr, len) {
        Ok(req) => handler(&req),
        Err(e) => Response::text(400, format!("{}\n", e)),
    };
    RESPONSE.with(|out| {
        let mut out = out.borrow_mut();
        encode_response_into(&resp, &mut out);
        // Don't keep a huge buffer alive forever after one big response.
        if out.capacity() > 1 << 20 && out.len() < out.capacity() / 4 {
            out.shrink_to_fit();
        }
        pack(out.as_ptr() as usize, out.len())
    })
}

fn pack(ptr: usize, len: usize) -> i64 {
    (((ptr as u64) << 32) | (len as u64 & 0xffff_ffff)) as i64
}

/// Defines the `edge_alloc` and `edge_handle` exports of a function module,
/// calling `handler: fn(&Request) -> Response` for every request.
///
/// Use it exactly once, at the crate root of a `cdylib`.
#[macro_export]
macro_rules! edge_main {
    ($handler:path) => {
        #[no_mangle]
        pub extern "C" fn edge_alloc(size: i32) -> i32 {
            $crate::__edge_alloc(size)
        }

        #[no_mangle]
        pub extern "C" fn edge_handle(ptr: i32, len: i32) -> i64 {
            $crate::dispatch(ptr, len, |req: &$crate::Request| -> $crate::Response {
                $handler(req)
            })
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Request {
        Request {
            method: "POST".into(),
            path: "/users/42".into(),
            query: "name=Ada%20Lovelace&x=1".into(),
            params: vec![("id".into(), "42".into())],
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-echo".into(), "hi".into()),
            ],
            body: b"{\"name\":\"Ada\"}".to_vec(),
        }
    }

    #[test]
    fn request_roundtrip() {
        let req = sample();
        let enc = encode_request(&req);
        assert_eq!(decode_request(&enc), Ok(req));
    }

    #[test]
    fn request_layout_is_exact() {
        let req = Request {
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            params: vec![],
            headers: vec![("a".into(), "b".into())],
            body: vec![],
        };
        let enc = encode_request(&req);
        let mut want = Vec::new();
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&3u32.to_le_bytes());
        want.extend_from_slice(b"GET");
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(b"/");
        want.extend_from_slice(&0u32.to_le_bytes()); // query
        want.extend_from_slice(&0u32.to_le_bytes()); // params
        want.extend_from_slice(&1u32.to_le_bytes()); // headers
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(b"a");
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(b"b");
        want.extend_from_slice(&0u32.to_le_bytes()); // body
        assert_eq!(enc, want);
    }

    #[test]
    fn response_layout_is_exact() {
        let resp = Response::new(201).with_header("X-A", "b").with_body(b"ok".to_vec());
        let enc = encode_response(&resp);
        let mut want = Vec::new();
        want.extend_from_slice(&201u32.to_le_bytes());
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&3u32.to_le_bytes());
        want.extend_from_slice(b"x-a");
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(b"b");
        want.extend_from_slice(&2u32.to_le_bytes());
        want.extend_from_slice(b"ok");
        assert_eq!(enc, want);
        assert_eq!(decode_response(&enc), Ok(resp));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let enc = encode_request(&sample());
        for n in 0..enc.len() {
            assert!(decode_request(&enc[..n]).is_err(), "prefix {} decoded", n);
        }
    }

    #[test]
    fn malformed_inputs() {
        let mut enc = encode_request(&sample());
        enc.push(0);
        assert_eq!(decode_request(&enc), Err(DecodeError::TrailingBytes(1)));
        let mut v2 = encode_request(&sample());
        v2[0] = 2;
        assert_eq!(decode_request(&v2), Err(DecodeError::UnsupportedVersion(2)));
        // Huge lengths and counts must not allocate or overflow.
        let mut huge = Vec::new();
        huge.extend_from_slice(&1u32.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_request(&huge).is_err());
        let mut many = encode_request(&Request::default());
        many.truncate(16); // version + 3 empty strings
        many.extend_from_slice(&u32::MAX.to_le_bytes()); // param_count
        assert!(decode_request(&many).is_err());
        // Invalid UTF-8 is replaced, not rejected.
        let mut bad = Request::default();
        bad.method = "GET".into();
        let mut enc = encode_request(&bad);
        enc[8..11].copy_from_slice(&[0xff, b'E', b'T']);
        assert_eq!(decode_request(&enc).unwrap().method, "\u{fffd}ET");
        // Random garbage never panics.
        let mut seed: u32 = 12345;
        for len in 0..200usize {
            let g: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (seed >> 16) as u8
                })
                .collect();
            let _ = decode_request(&g);
            let _ = decode_response(&g);
        }
    }

    #[test]
    fn query_helpers() {
        let req = sample();
        assert_eq!(req.query_param("name").as_deref(), Some("Ada Lovelace"));
        assert_eq!(req.query_param("x").as_deref(), Some("1"));
        assert_eq!(req.query_param("missing"), None);
        assert_eq!(percent_decode("a+b%2Bc%zz%4"), "a b+c%zz%4");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%4"), "%4");
        assert_eq!(percent_decode("%41"), "A");
        assert_eq!(percent_decode("caf%C3%A9"), "café");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
        assert_eq!(
            parse_query("a=1&&flag&b=%3D=x"),
            vec![
                ("a".to_string(), "1".to_string()),
                ("flag".to_string(), String::new()),
                ("b".to_string(), "==x".to_string()),
            ]
        );
        assert_eq!(req.header("Content-Type"), Some("application/json"));
        assert_eq!(req.param("id"), Some("42"));
        assert_eq!(req.param("nope"), None);
    }

    #[test]
    fn alloc_and_dispatch() {
        let req = sample();
        let enc = encode_request(&req);
        let ptr = __edge_alloc(enc.len() as i32);
        assert_ne!(ptr, 0);
        // On a 64-bit host the pointer does not fit in i32, so exercise the
        // buffer lookup directly via the thread-local instead.
        REQUEST_BUFFERS.with(|b| {
            let mut b = b.borrow_mut();
            let last = b.last_mut().unwrap();
            last.copy_from_slice(&enc);
        });
        let base = REQUEST_BUFFERS.with(|b| b.borrow().last().unwrap().as_ptr() as usize);
        if base <= i32::MAX as usize {
            let packed = dispatch(base as i32, enc.len() as i32, |r| Response::text(200, r.path.clone()));
            assert_eq!(packed as u64 & 0xffff_ffff, RESPONSE.with(|o| o.borrow().len()) as u64);
        }
        REQUEST_BUFFERS.with(|b| b.borrow_mut().clear());
        // An unknown buffer is a 400, not a crash.
        let packed = dispatch(0, 4, |_| Response::text(200, "unreachable"));
        let len = (packed as u64 & 0xffff_ffff) as usize;
        let resp = RESPONSE.with(|o| decode_response(&o.borrow()[..len]).unwrap());
        assert_eq!(resp.status, 400);
    }
}
