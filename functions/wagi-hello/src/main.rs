//! wagi-hello: a WAGI (CGI over WASI) sample function for edge-runner.
//!
//! The runner starts a fresh WASI command per request with the request in
//! CGI environment variables (`REQUEST_METHOD`, `PATH_INFO`, `QUERY_STRING`,
//! `HTTP_*`, ...) and the body on stdin. We answer with a CGI header block,
//! a blank line and a plain-text greeting that uses `?name=` (default
//! `world`) and the `GREETING` env var (default `Hello`), followed by what
//! we saw of the request.

use std::env;
use std::io::{self, Read, Write};

/// The first `name` parameter of a raw query string, percent-decoded (the
/// edge SDK's query parser: the query-string rules are the same for both ABIs).
fn query_param(query: &str, name: &str) -> Option<String> {
    edge_sdk::parse_query(query)
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

fn var(name: &str) -> String {
    env::var(name).unwrap_or_default()
}

fn main() {
    let method = var("REQUEST_METHOD");
    let path = var("PATH_INFO");
    let query = var("QUERY_STRING");
    let name = query_param(&query, "name")
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "world".to_string());
    let greeting = env::var("GREETING")
        .ok()
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| "Hello".to_string());

    let mut body = Vec::new();
    let body_err = io::stdin().read_to_end(&mut body).err();

    let mut headers: Vec<(String, String)> = env::vars()
        .filter(|(k, _)| k.starts_with("HTTP_"))
        .collect();
    headers.sort();

    let mut out = String::new();
    out.push_str("Content-Type: text/plain; charset=utf-8\n");
    if let Ok(echo) = env::var("HTTP_X_ECHO") {
        // Header values must not contain line breaks.
        out.push_str(&format!("X-Echo: {}\n", echo.replace(['\r', '\n'], " ")));
    }
    out.push('\n');
    out.push_str(&format!("{}, {}!\n", greeting, name));
    out.push_str(&format!("method: {}\npath: {}\nquery: {}\n", method, path, query));
    out.push_str(&format!("body: {} bytes\n", body.len()));
    if let Some(e) = body_err {
        out.push_str(&format!("stdin error: {}\n", e));
    }
    for (k, v) in &headers {
        out.push_str(&format!("{}: {}\n", k, v));
    }

    let stdout = io::stdout();
    let mut lock = stdout.lock();
    // A closed stdout is the host's problem; nothing useful to do about it.
    let _ = lock.write_all(out.as_bytes());
    let _ = lock.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query() {
        assert_eq!(query_param("a=1&name=Ada+L%C3%A9", "name").as_deref(), Some("Ada Lé"));
        assert_eq!(query_param("name", "name").as_deref(), Some(""));
        assert_eq!(query_param("x=1", "name"), None);
        assert_eq!(edge_sdk::percent_decode("%zz%4"), "%zz%4");
    }
}
