//! Reading a request body under a byte limit that holds for the decompressed size too, so a gzip
//! bomb costs at most `limit + 1` bytes before it is refused; and under a time limit, so a client
//! cannot hold a connection and a buffer by trickling its body (the service's
//! `body_read_timeout_secs`, given to the skeleton as [`crate::ServeOptions::body_read_timeout`]).
use std::future::Future;
use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::http::{header, Method};
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest};
use futures::{Stream, StreamExt};

use crate::error::ApiError;

/// The body deadline of a service, in its app data.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub Duration);

/// Gives every request body of `req` a deadline: once the service's [`BodyDeadline`] has passed
/// since its headers, reading the body fails with a timeout that [`timeout_error`] recognises
/// (ingest, JSON extractors, and any other reader alike). Bodiless requests are left alone.
pub fn with_body_deadline(req: ServiceRequest) -> ServiceRequest {
    let bodiless = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
    let timeout = req.app_data::<BodyDeadline>().map(|d| d.0);
    let (Some(timeout), false) = (timeout, bodiless) else {
        return req;
    };
    let (http, payload) = req.into_parts();
    let timed = Deadline {
        inner: payload,
        sleep: Box::pin(tokio::time::sleep(timeout)),
        done: false,
    };
    let boxed: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(timed);
    ServiceRequest::from_parts(http, Payload::from(boxed))
}

struct Deadline {
    inner: Payload,
    sleep: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.done = true;
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request body did not arrive in time",
            )))));
        }
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// The 408 for a body read that ran out of time, if that is what `err` is.
pub fn timeout_error(err: &PayloadError, req: &HttpRequest) -> Option<ApiError> {
    match err {
        PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            let secs = req
                .app_data::<BodyDeadline>()
                .map(|d| d.0)
                .unwrap_or(Duration::ZERO)
                .as_secs();
            Some(ApiError::RequestTimeout(secs))
        }
        _ => None,
    }
}

/// Checks the content type, reads at most `limit` bytes, and inflates gzip under the same limit.
pub async fn read_json_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    what: &'static str,
) -> Result<Vec<u8>, ApiError> {
    require_json(req)?;
    read_body(req, payload, limit, what).await
}

/// Reads at most `limit` bytes of any content type (intakes that browsers call send
/// `text/plain`), and inflates gzip, named by `Content-Encoding` or by its magic bytes, under
/// the same limit.
pub async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    what: &'static str,
) -> Result<Vec<u8>, ApiError> {
    let gzip = content_encoding_is_gzip(req)?;
    let raw = read_raw(req, payload, limit, what).await?;
    if !gzip && !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    inflate(&raw, limit).map_err(|e| match e {
        InflateError::TooLarge => ApiError::PayloadTooLarge { what, limit },
        InflateError::Corrupt(msg) => ApiError::MalformedJson(format!("invalid gzip body: {msg}")),
    })
}

/// Reads at most `limit` bytes as they came, undecoded (a signature is checked on these).
pub async fn read_raw(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
    what: &'static str,
) -> Result<Vec<u8>, ApiError> {
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
        let chunk = chunk.map_err(|e| {
            timeout_error(&e, req)
                .unwrap_or_else(|| ApiError::MalformedJson(format!("cannot read the body: {e}")))
        })?;
        if raw.len() + chunk.len() > limit {
            return Err(too_large());
        }
        raw.extend_from_slice(&chunk);
    }
    Ok(raw)
}

#[derive(Debug, PartialEq)]
pub enum InflateError {
    TooLarge,
    Corrupt(String),
}

/// Inflates a gzip body, refusing as soon as it would pass `limit` bytes.
pub fn inflate(raw: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    // The gzip trailer states the inflated size (mod 2^32): sized from it, an honest body is
    // inflated into one allocation instead of a chain of doublings and copies. A lying trailer
    // costs at most `limit` bytes, as any body does.
    let stated = raw
        .len()
        .checked_sub(4)
        .and_then(|at| raw.get(at..))
        .and_then(|t| <[u8; 4]>::try_from(t).ok())
        .map(|t| u32::from_le_bytes(t) as usize)
        .unwrap_or(0);
    let mut out = Vec::with_capacity(stated.max(raw.len()).min(limit) + 1);
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
