//! Reading a request body under a byte limit that holds for the decompressed size too, so a gzip
//! bomb costs at most `limit + 1` bytes before it is refused.
use std::io::Read;

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use futures::StreamExt;

use crate::error::ApiError;

/// Checks the content type, reads at most `limit` bytes, and inflates gzip under the same limit.
pub async fn read_json_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    what: &'static str,
) -> Result<Vec<u8>, ApiError> {
    require_json(req)?;
    let gzip = content_encoding_is_gzip(req)?;
    let too_large = || ApiError::PayloadTooLarge { what, limit };

    if let Some(len) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return Err(too_large());
        }
    }
    let mut raw = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::MalformedJson(format!("cannot read the body: {e}")))?;
        if raw.len() + chunk.len() > limit {
            return Err(too_large());
        }
        raw.extend_from_slice(&chunk);
    }
    if !gzip {
        return Ok(raw);
    }
    inflate(&raw, limit).map_err(|e| match e {
        InflateError::TooLarge => too_large(),
        InflateError::Corrupt(msg) => ApiError::MalformedJson(format!("invalid gzip body: {msg}")),
    })
}

#[derive(Debug, PartialEq)]
pub enum InflateError {
    TooLarge,
    Corrupt(String),
}

/// Inflates a gzip body, refusing as soon as it would pass `limit` bytes.
pub fn inflate(raw: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
    flate2::read::MultiGzDecoder::new(raw)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| InflateError::Corrupt(e.to_string()))?;
    if out.len() > limit {
        return Err(InflateError::TooLarge);
    }
    Ok(out)
}

fn require_json(req: &HttpRequest) -> Result<(), ApiError> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type must be application/json, got `{}`",
            if ct.is_empty() { "none" } else { ct }
        )))
    }
}

fn content_encoding_is_gzip(req: &HttpRequest) -> Result<bool, ApiError> {
    match req
        .headers()
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => Ok(false),
        Some("gzip") | Some("x-gzip") => Ok(true),
        Some(other) => Err(ApiError::UnsupportedMediaType(format!(
            "Content-Encoding `{other}` is not supported; use gzip or none"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn inflates_within_the_limit() {
        assert_eq!(inflate(&gz(b"{\"a\":1}"), 100).unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn a_bomb_stops_one_byte_past_the_limit() {
        let bomb = gz(&vec![b' '; 10 * 1024 * 1024]);
        assert!(bomb.len() < 20_000);
        assert_eq!(inflate(&bomb, 64 * 1024), Err(InflateError::TooLarge));
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        assert!(matches!(
            inflate(b"not gzip at all", 100),
            Err(InflateError::Corrupt(_))
        ));
    }
}
