//! The plugin protocol's message encoding, as dockerd 20.10's Go client produces and reads it.
//!
//! * Request bodies are JSON objects written by Go's `json.Encoder` from structs whose keys
//!   are all `omitempty`: an absent key means the empty value. Keys are matched like Go's
//!   `encoding/json` does: an exact match first, then case-insensitively. Unknown keys are
//!   ignored. An empty body (`Plugin.Activate`) or `null` is an empty object.
//! * `GraphDriver.ApplyDiff` carries its arguments in the query string
//!   (`?id=X&parent=Y`), which dockerd builds without escaping; values are taken verbatim.
//! * Every request body is read in full before the answer, so that the connection stays
//!   usable: JSON bodies up to [`MAX_BODY`] bytes (a larger one is refused with 413), each
//!   piece within the body timeout of the previous one (408 otherwise).
//! * The parent of `Diff`, `Changes` and `DiffSize` is [`base`]: `""` is no parent at all.
//! * Errors are `{"Err": "..."}` with a non-200 status.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Map, Value};

use super::PluginError;
use crate::graph::DiffBase;

/// The media type of plugin responses (dockerd ignores it; go-plugins-helpers sends v1.1).
pub(super) const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// A decoded request body.
#[derive(Debug, Default)]
pub(super) struct Args(Map<String, Value>);

impl Args {
    /// Decodes a request body.
    pub(super) fn parse(body: &[u8]) -> Result<Args, PluginError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Args::default());
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => Ok(Args(m)),
            Ok(Value::Null) => Ok(Args::default()),
            Ok(other) => Err(PluginError::BadRequest(format!(
                "the request body must be a JSON object, not {}",
                kind(&other)
            ))),
            Err(e) => Err(PluginError::BadRequest(format!(
                "the request body is not JSON: {e}"
            ))),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).or_else(|| {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
    }

    fn bad(key: &str, want: &str, got: &Value) -> PluginError {
        PluginError::BadRequest(format!("{key:?} must be {want}, not {}", kind(got)))
    }

    /// A string; absent or `null` is `""`.
    pub(super) fn string(&self, key: &str) -> Result<String, PluginError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(Self::bad(key, "a string", v)),
        }
    }

    /// A list of strings; absent or `null` is empty.
    pub(super) fn strings(&self, key: &str) -> Result<Vec<String>, PluginError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    v => Err(Self::bad(key, "a list of strings", v)),
                })
                .collect(),
            Some(v) => Err(Self::bad(key, "a list of strings", v)),
        }
    }

    /// A map of strings to strings; absent or `null` is empty.
    pub(super) fn string_map(&self, key: &str) -> Result<BTreeMap<String, String>, PluginError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(BTreeMap::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) => Ok((k.clone(), s.clone())),
                    v => Err(Self::bad(key, "an object of strings", v)),
                })
                .collect(),
            Some(v) => Err(Self::bad(key, "an object of strings", v)),
        }
    }

    /// The number of entries of a list; absent or `null` is 0.
    pub(super) fn list_len(&self, key: &str) -> Result<usize, PluginError> {
        match self.get(key) {
            None | Some(Value::Null) => Ok(0),
            Some(Value::Array(a)) => Ok(a.len()),
            Some(v) => Err(Self::bad(key, "a list", v)),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `id` and `parent` of `/GraphDriver.ApplyDiff?id=X&parent=Y`, verbatim.
pub(super) fn apply_query(query: Option<&str>) -> Result<(String, String), PluginError> {
    let (mut id, mut parent) = (None, None);
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "id" => id = Some(v.to_string()),
            "parent" => parent = Some(v.to_string()),
            _ => {}
        }
    }
    match id {
        Some(id) if !id.is_empty() => Ok((id, parent.unwrap_or_default())),
        _ => Err(PluginError::BadRequest(
            "ApplyDiff needs the layer in the query: /GraphDriver.ApplyDiff?id=ID&parent=PARENT"
                .into(),
        )),
    }
}

/// The base of a diff-like call (`Diff`, `Changes`, `DiffSize`): as in dockerd's drivers,
/// the empty string is no parent at all, so the whole layer is the change.
pub(super) fn base(parent: &str) -> DiffBase<'_> {
    if parent.is_empty() {
        DiffBase::Nothing
    } else {
        DiffBase::Layer(parent)
    }
}

/// The most bytes of a JSON request body (dockerd's are a few hundred).
pub(super) const MAX_BODY: usize = 1 << 20;

/// Reads a whole request body of `call`: at most [`MAX_BODY`] bytes (more is refused, and the
/// connection is closed after the answer), each piece within `timeout` of the previous one.
pub(super) async fn read_body(
    call: &str,
    body: Body,
    timeout: Duration,
) -> Result<Vec<u8>, PluginError> {
    let mut data = body.into_data_stream();
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(timeout, data.next()).await {
            Err(_) => {
                return Err(PluginError::BodyTimeout {
                    call: call.trim_start_matches('/').to_string(),
                    timeout,
                })
            }
            Ok(None) => return Ok(out),
            Ok(Some(Err(e))) => {
                return Err(PluginError::BadRequest(format!(
                    "reading the request body: {e}"
                )))
            }
            Ok(Some(Ok(chunk))) => {
                if out.len() + chunk.len() > MAX_BODY {
                    return Err(PluginError::TooLarge {
                        call: call.trim_start_matches('/').to_string(),
                        limit: MAX_BODY,
                    });
                }
                out.extend_from_slice(&chunk);
            }
        }
    }
}

/// A 200 response whose body is a JSON document streamed as it is produced.
pub(super) fn json_stream(body: Body) -> Response {
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

/// A response with a JSON body.
pub(super) fn json(status: StatusCode, body: &Value) -> Response {
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_case_insensitive_and_absent_is_empty() {
        let a = Args::parse(br#"{"id":"x","PARENT":"p","StorageOpt":{"size":"1G"}}"#).unwrap();
        assert_eq!(a.string("ID").unwrap(), "x");
        assert_eq!(a.string("Parent").unwrap(), "p");
        assert_eq!(a.string("MountLabel").unwrap(), "");
        assert_eq!(a.string_map("StorageOpt").unwrap()["size"], "1G");
        assert!(a.strings("Opts").unwrap().is_empty());
        let exact = Args::parse(br#"{"id":"lower","ID":"exact"}"#).unwrap();
        assert_eq!(exact.string("ID").unwrap(), "exact");
    }

    #[test]
    fn empty_and_null_bodies_are_empty_objects() {
        assert_eq!(Args::parse(b"").unwrap().string("ID").unwrap(), "");
        assert_eq!(Args::parse(b"{}\n").unwrap().string("ID").unwrap(), "");
        assert_eq!(
            Args::parse(b"null").unwrap().list_len("UIDMaps").unwrap(),
            0
        );
        assert!(Args::parse(b"[1]").is_err());
        assert!(Args::parse(b"{").is_err());
        assert!(Args::parse(br#"{"ID":5}"#).unwrap().string("ID").is_err());
    }

    #[test]
    fn apply_query_is_verbatim() {
        assert_eq!(
            apply_query(Some("id=abc&parent=")).unwrap(),
            ("abc".into(), "".into())
        );
        assert_eq!(
            apply_query(Some("parent=p&id=a-init")).unwrap(),
            ("a-init".into(), "p".into())
        );
        assert_eq!(apply_query(Some("id=a")).unwrap(), ("a".into(), "".into()));
        assert!(apply_query(None).is_err());
        assert!(apply_query(Some("id=&parent=x")).is_err());
    }
}
