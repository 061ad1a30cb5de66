//! A tiny JSON validator that extracts one top-level string field, so the
//! sample needs no external crates. It accepts exactly RFC 8259 JSON (with
//! a nesting limit) and decodes string escapes, including `\uXXXX` surrogate
//! pairs; lone surrogates become U+FFFD.

use std::fmt;

const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonError {
    NotUtf8,
    Syntax(&'static str, usize),
    NotAnObject,
    NotAString(String),
    TooDeep,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonError::NotUtf8 => write!(f, "request body is not UTF-8"),
            JsonError::Syntax(what, at) => write!(f, "invalid JSON at byte {}: {}", at, what),
            JsonError::NotAnObject => write!(f, "request body must be a JSON object"),
            JsonError::NotAString(field) => write!(f, "field \"{}\" must be a string", field),
            JsonError::TooDeep => write!(f, "JSON nested too deeply"),
        }
    }
}

/// What a parsed value was, as far as this module cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Str(String),
    Null,
    Other,
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    fn err<T>(&self, what: &'static str) -> Result<T, JsonError> {
        Err(JsonError::Syntax(what, self.pos))
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, b: u8, what: &'static str) -> Result<(), JsonError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(what)
        }
    }

    fn literal(&mut self, lit: &'static [u8]) -> Result<(), JsonError> {
        if self.s[self.pos..].starts_with(lit) {
            self.pos += lit.len();
            Ok(())
        } else {
            self.err("unexpected token")
        }
    }

    /// Parses any value.
    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(JsonError::TooDeep);
        }
        self.ws();
        match self.peek() {
            Some(b'"') => return self.string().map(Value::Str),
            Some(b'{') => {
                self.object(depth + 1, |_, _| ())?;
            }
            Some(b'[') => {
                self.pos += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.pos += 1;
                } else {
                    loop {
                        self.value(depth + 1)?;
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.pos += 1,
                            Some(b']') => {
                                self.pos += 1;
                                break;
                            }
                            _ => return self.err("expected ',' or ']'"),
                        }
                    }
                }
            }
            Some(b't') => self.literal(b"true")?,
            Some(b'f') => self.literal(b"false")?,
            Some(b'n') => {
                self.literal(b"null")?;
                return Ok(Value::Null);
            }
            Some(b'-' | b'0'..=b'9') => self.number()?,
            None => return self.err("unexpected end of input"),
            Some(_) => return self.err("unexpected character"),
        }
        Ok(Value::Other)
    }

    /// Parses an object, calling `on_field(key, value)` for each member.
    fn object<F>(&mut self, depth: usize, mut on_field: F) -> Result<(), JsonError>
    where
        F: FnMut(String, Value),
    {
        self.expect(b'{', "expected '{'")?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return self.err("expected a string key");
            }
            let key = self.string()?;
            self.ws();
            self.expect(b':', "expected ':'")?;
            let v = self.value(depth)?;
            on_field(key, v);
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return self.err("expected ',' or '}'"),
            }
        }
    }

    fn number(&mut self) -> Result<(), JsonError> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return self.err("invalid number"),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return self.err("invalid number");
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return self.err("invalid number");
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return self.err("invalid \\u escape"),
            };
            v = v << 4 | u32::from(d);
            self.pos += 1;
        }
        Ok(v)
    }

    fn string(&mut self) -> Result<String, JsonError> {
        self.expect(b'"', "expected '\"'")?;
        let mut out = String::new();
        loop {
            // Copy the run of plain characters in one go.
            let start = self.pos;
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // The input is valid UTF-8 and we stopped on an ASCII byte (or the
            // end), so this slice is on character boundaries.
            out.push_str(std::str::from_utf8(&self.s[start..self.pos]).map_err(|_| JsonError::NotUtf8)?);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = match self.peek() {
                        Some(c) => c,
                        None => return self.err("unterminated escape"),
                    };
                    self.pos += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) && self.s[self.pos..].starts_with(b"\\u") {
                                let save = self.pos;
                                self.pos += 2;
                                let lo = self.hex4()?;
                                if (0xDC00..0xE000).contains(&lo) {
                                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                                } else {
                                    self.pos = save; // decode the next escape on its own
                                    0xFFFD
                                }
                            } else {
                                hi
                            };
                            out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                        }
                        _ => {
                            self.pos -= 1;
                            return self.err("invalid escape");
                        }
                    }
                }
                Some(_) => return self.err("control character in string"),
                None => return self.err("unterminated string"),
            }
        }
    }
}

/// Validates `body` as a JSON object and returns its top-level string field
/// `field`: `Ok(None)` if absent or `null` (the last occurrence wins), an
/// error if it has another type.
pub fn top_level_string_field(body: &[u8], field: &str) -> Result<Option<String>, JsonError> {
    let text = std::str::from_utf8(body).map_err(|_| JsonError::NotUtf8)?;
    let mut p = Parser {
        s: text.as_bytes(),
        pos: 0,
    };
    p.ws();
    if p.peek() != Some(b'{') {
        // Report syntax errors as such (e.g. for an empty body).
        p.value(0)?;
        return Err(JsonError::NotAnObject);
    }
    let mut found = Value::Null;
    p.object(1, |k, v| {
        if k == field {
            found = v;
        }
    })?;
    p.ws();
    if p.pos != p.s.len() {
        return p.err("trailing characters after the JSON value");
    }
    match found {
        Value::Str(s) => Ok(Some(s)),
        Value::Null => Ok(None),
        Value::Other => Err(JsonError::NotAString(field.to_string())),
    }
}

/// Appends `s` to `out` as a JSON string literal.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Result<Option<String>, JsonError> {
        top_level_string_field(s.as_bytes(), "name")
    }

    #[test]
    fn extracts() {
        assert_eq!(name(r#"{"name": "Ada"}"#), Ok(Some("Ada".into())));
        assert_eq!(name(r#" { "x": [1, {"name": 2}], "name" : "A\"d\\a\u00e9\ud83d\ude00" } "#), Ok(Some("A\"d\\aé😀".into())));
        assert_eq!(name(r#"{}"#), Ok(None));
        assert_eq!(name(r#"{"name": null}"#), Ok(None));
        assert_eq!(name(r#"{"other": "x", "n": -1.5e3, "t": true}"#), Ok(None));
        assert_eq!(name(r#"{"name": "\ud800"}"#), Ok(Some("\u{fffd}".into())));
    }

    #[test]
    fn rejects() {
        for bad in ["", "{", "{\"name\": \"Ada\"", "{\"name\": 'Ada'}", "[1]", "\"x\"", "{} x",
                    "{\"name\": \"a\nb\"}", "{\"a\": 01}", "{\"a\": 1.}", "{\"a\": tru}", "{,}",
                    "{\"a\":1,}", "{\"name\": \"\\x\"}", "{\"name\": \"\\u12\"}"] {
            assert!(name(bad).is_err(), "accepted {:?}", bad);
        }
        assert_eq!(name(r#"{"name": 5}"#), Err(JsonError::NotAString("name".into())));
        assert_eq!(name(r#"{"name": {"a": null}}"#), Err(JsonError::NotAString("name".into())));
        let deep = "[".repeat(1000);
        assert!(name(&format!("{{\"a\": {}}}", deep)).is_err());
        assert_eq!(top_level_string_field(&[0xff], "name"), Err(JsonError::NotUtf8));
    }

    #[test]
    fn writes() {
        let mut s = String::new();
        write_string(&mut s, "a\"b\\c\n\u{1}é");
        assert_eq!(s, r#""a\"b\\c\n\u0001é""#);
    }
}
