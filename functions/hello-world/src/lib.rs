//! hello-world: the sample edge-runner function (edge ABI).
//!
//! * `GET /hello[?name=Ada]` -> `200 text/plain` `Hello, Ada!` (default name
//!   `world`).
//! * `POST /hello` with a JSON object body `{"name": "Ada"}` ->
//!   `200 application/json` `{"message":"Hello, Ada!"}`; a body that is not a
//!   JSON object, or whose `name` is not a string, -> `400` with a JSON
//!   `{"error": ...}`.
//! * Any other method -> `405` with `allow: GET, POST`.
//! * The greeting word comes from the `GREETING` environment variable
//!   (`spec.env` of the EdgeFunction), default `Hello`.
//! * The request header `x-echo`, when present, is copied to the response.

use edge_sdk::{Request, Response};

mod json;

const DEFAULT_NAME: &str = "world";

fn greeting() -> String {
    match std::env::var("GREETING") {
        Ok(g) if !g.is_empty() => g,
        _ => "Hello".to_string(),
    }
}

fn json_error(status: u16, message: &str) -> Response {
    let mut body = String::from("{\"error\":");
    json::write_string(&mut body, message);
    body.push('}');
    Response::json(status, body)
}

fn handle(req: &Request) -> Response {
    let resp = match req.method.as_str() {
        "GET" => {
            let name = req
                .query_param("name")
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| DEFAULT_NAME.to_string());
            Response::text(200, format!("{}, {}!", greeting(), name))
        }
        "POST" => match json::top_level_string_field(&req.body, "name") {
            Ok(name) => {
                let name = name
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| DEFAULT_NAME.to_string());
                let mut body = String::from("{\"message\":");
                json::write_string(&mut body, &format!("{}, {}!", greeting(), name));
                body.push('}');
                Response::json(200, body)
            }
            Err(e) => json_error(400, &e.to_string()),
        },
        _ => json_error(405, "method not allowed; use GET or POST").with_header("allow", "GET, POST"),
    };
    match req.header("x-echo") {
        Some(v) => resp.with_header("x-echo", v),
        None => resp,
    }
}

edge_sdk::edge_main!(handle);

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, query: &str, body: &str) -> Request {
        Request {
            method: method.into(),
            path: "/hello".into(),
            query: query.into(),
            body: body.as_bytes().to_vec(),
            ..Request::default()
        }
    }

    // GREETING is process-global; these tests assume it is unset.
    #[test]
    fn get_and_post() {
        std::env::remove_var("GREETING");
        let r = handle(&req("GET", "", ""));
        assert_eq!((r.status, r.body.as_slice()), (200, &b"Hello, world!"[..]));
        let r = handle(&req("GET", "name=Ada%20L", ""));
        assert_eq!(r.body, b"Hello, Ada L!");
        let r = handle(&req("POST", "", r#"{"name": "Ada"}"#));
        assert_eq!(r.body, br#"{"message":"Hello, Ada!"}"#);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let r = handle(&req("POST", "", "{"));
        assert_eq!(r.status, 400);
        let r = handle(&req("DELETE", "", ""));
        assert_eq!((r.status, r.header("allow")), (405, Some("GET, POST")));
        let mut q = req("GET", "", "");
        q.headers.push(("x-echo".into(), "ping".into()));
        assert_eq!(handle(&q).header("x-echo"), Some("ping"));
    }
}
