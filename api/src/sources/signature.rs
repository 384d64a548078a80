//! Webhook signatures: Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature:
//! v1,<base64>` over `{id}.{timestamp}.{body}`; Svix's `svix-*` names too) and Stripe
//! (`Stripe-Signature: t=…,v1=<hex>` over `{t}.{body}`). HMAC-SHA256 over the raw bytes, checked
//! before anything parses them, in constant time (`Mac::verify_slice`, which also refuses a
//! signature of the wrong length), within a tolerance either side of now. Pure: the caller hands
//! in the headers, the body, the secrets and the clock.
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

type HmacSha256 = Hmac<Sha256>;

/// The signing scheme of a webhook source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Scheme {
    #[serde(rename = "standard-webhooks")]
    StandardWebhooks,
    #[serde(rename = "stripe")]
    Stripe,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::StandardWebhooks => "standard-webhooks",
            Scheme::Stripe => "stripe",
        }
    }

    pub fn parse(s: &str) -> Option<Scheme> {
        match s {
            "standard-webhooks" => Some(Scheme::StandardWebhooks),
            "stripe" => Some(Scheme::Stripe),
            _ => None,
        }
    }
}

/// Why a delivery is refused (the client sees 401; the reason goes to the log and a metric).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the signature headers are missing: {0}")]
    Missing(&'static str),
    #[error("the signature headers are malformed")]
    Malformed,
    #[error("the timestamp is more than {0} s from now")]
    Stale(i64),
    #[error("no signature matches")]
    Mismatch,
}

impl Refusal {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Missing(_) => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Stale(_) => "stale",
            Refusal::Mismatch => "mismatch",
        }
    }
}

/// A delivery whose signature holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// `webhook-id` (Standard Webhooks): the sender's id for the message, the same on every retry.
    pub message_id: Option<String>,
    pub timestamp: i64,
}

/// What a new secret looks like: `whsec_` and the base64 of 32 random bytes (Standard
/// Webhooks' form; Stripe uses its secrets' text as the key, which this form also suits).
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rng(), &mut bytes);
    format!("whsec_{}", STANDARD.encode(bytes))
}

/// Whether a secret a sender issued can be used with `scheme`, and why not.
pub fn secret_problem(scheme: Scheme, secret: &str) -> Option<&'static str> {
    match scheme {
        Scheme::StandardWebhooks => match key_bytes(scheme, secret) {
            Some(k) if (24..=64).contains(&k.len()) => None,
            _ => Some("a Standard Webhooks secret is `whsec_` and the base64 of 24 to 64 bytes"),
        },
        Scheme::Stripe => {
            let printable = secret.bytes().all(|b| b.is_ascii_graphic());
            if (8..=256).contains(&secret.len()) && printable {
                None
            } else {
                Some("a Stripe signing secret is 8 to 256 printable characters (`whsec_…`)")
            }
        }
    }
}

/// The HMAC key of a secret: Standard Webhooks signs with the base64-decoded bytes after
/// `whsec_`, Stripe with the secret's text itself.
fn key_bytes(scheme: Scheme, secret: &str) -> Option<Vec<u8>> {
    match scheme {
        Scheme::StandardWebhooks => {
            let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
            STANDARD.decode(b64).ok()
        }
        Scheme::Stripe => Some(secret.as_bytes().to_vec()),
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    for p in parts {
        mac.update(p);
    }
    mac
}

/// Checks a delivery against each secret in turn (the current one, and the one before it while
/// its grace lasts). `header` reads a request header by lower-case name.
pub fn verify<'h>(
    scheme: Scheme,
    secrets: &[&str],
    header: impl Fn(&str) -> Option<&'h str>,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<Verified, Refusal> {
    let (message_id, timestamp_text, signatures): (Option<&str>, &str, Vec<Vec<u8>>) = match scheme
    {
        Scheme::StandardWebhooks => {
            let read = |a: &str, b: &str| header(a).or_else(|| header(b));
            let id = read("webhook-id", "svix-id").ok_or(Refusal::Missing("webhook-id"))?;
            let ts = read("webhook-timestamp", "svix-timestamp")
                .ok_or(Refusal::Missing("webhook-timestamp"))?;
            let sigs = read("webhook-signature", "svix-signature")
                .ok_or(Refusal::Missing("webhook-signature"))?;
            // `v1,<base64>` entries, space-separated; other versions are not ours to check.
            let decoded = sigs
                .split(' ')
                .filter_map(|s| s.strip_prefix("v1,"))
                .map(|b64| STANDARD.decode(b64).unwrap_or_default())
                .collect();
            (Some(id), ts, decoded)
        }
        Scheme::Stripe => {
            let h = header("stripe-signature").ok_or(Refusal::Missing("stripe-signature"))?;
            let mut t = None;
            let mut sigs = Vec::new();
            for part in h.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", v)) => t = Some(v),
                    Some(("v1", v)) => sigs.push(hex::decode(v).unwrap_or_default()),
                    _ => {}
                }
            }
            (None, t.ok_or(Refusal::Malformed)?, sigs)
        }
    };
    let timestamp: i64 = timestamp_text
        .trim()
        .parse()
        .map_err(|_| Refusal::Malformed)?;
    if (now_secs - timestamp).abs() > tolerance_secs {
        return Err(Refusal::Stale(tolerance_secs));
    }
    if signatures.is_empty() {
        return Err(Refusal::Mismatch);
    }
    for secret in secrets {
        let Some(key) = key_bytes(scheme, secret) else {
            continue;
        };
        let signed = match (scheme, message_id) {
            (Scheme::StandardWebhooks, Some(id)) => mac(
                &key,
                &[id.as_bytes(), b".", timestamp_text.as_bytes(), b".", body],
            ),
            _ => mac(&key, &[timestamp_text.as_bytes(), b".", body]),
        };
        // Each candidate is compared in constant time; an empty or short one never matches.
        if signatures
            .iter()
            .any(|sig| signed.clone().verify_slice(sig).is_ok())
        {
            return Ok(Verified {
                message_id: message_id.map(str::to_owned),
                timestamp,
            });
        }
    }
    Err(Refusal::Mismatch)
}

/// A Standard Webhooks signature header value for `body` (for tests and the dashboard's
/// example): `v1,<base64>`.
pub fn sign_standard(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Option<String> {
    let key = key_bytes(Scheme::StandardWebhooks, secret)?;
    let ts = timestamp.to_string();
    let sig = mac(&key, &[id.as_bytes(), b".", ts.as_bytes(), b".", body])
        .finalize()
        .into_bytes();
    Some(format!("v1,{}", STANDARD.encode(sig)))
}

/// A `Stripe-Signature` header value for `body`.
pub fn sign_stripe(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let sig = mac(secret.as_bytes(), &[ts.as_bytes(), b".", body])
        .finalize()
        .into_bytes();
    format!("t={ts},v1={}", hex::encode(sig))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The Standard Webhooks specification's own example (standard-webhooks/standard-webhooks,
    /// libraries' test suites): this secret, id, timestamp and payload give this signature.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_PAYLOAD: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn headers(pairs: &[(&str, String)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn check(
        scheme: Scheme,
        secrets: &[&str],
        h: &HashMap<String, String>,
        body: &str,
        now: i64,
    ) -> Result<Verified, Refusal> {
        verify(
            scheme,
            secrets,
            |n| h.get(n).map(String::as_str),
            body.as_bytes(),
            now,
            300,
        )
    }

    fn spec_headers(signature: &str) -> HashMap<String, String> {
        headers(&[
            ("webhook-id", SPEC_ID.into()),
            ("webhook-timestamp", SPEC_TS.to_string()),
            ("webhook-signature", signature.into()),
        ])
    }

    #[test]
    fn the_specifications_test_vector_signs_and_verifies() {
        assert_eq!(
            sign_standard(SPEC_SECRET, SPEC_ID, SPEC_TS, SPEC_PAYLOAD.as_bytes()).as_deref(),
            Some(SPEC_SIGNATURE)
        );
        let ok = check(
            Scheme::StandardWebhooks,
            &[SPEC_SECRET],
            &spec_headers(SPEC_SIGNATURE),
            SPEC_PAYLOAD,
            SPEC_TS + 10,
        )
        .unwrap();
        assert_eq!(ok.message_id.as_deref(), Some(SPEC_ID));
    }

    #[test]
    fn tampering_truncation_staleness_and_wrong_secrets_are_refused() {
        let s = Scheme::StandardWebhooks;
        let h = spec_headers(SPEC_SIGNATURE);
        let tampered = SPEC_PAYLOAD.replace('2', "3");
        assert_eq!(
            check(s, &[SPEC_SECRET], &h, &tampered, SPEC_TS),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            check(s, &[SPEC_SECRET], &h, SPEC_PAYLOAD, SPEC_TS + 301),
            Err(Refusal::Stale(300))
        );
        assert_eq!(
            check(s, &[SPEC_SECRET], &h, SPEC_PAYLOAD, SPEC_TS - 301),
            Err(Refusal::Stale(300))
        );
        for truncated in [
            "v1,",
            "v1,g0hM9SsE",
            "v1",
            "",
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
        ] {
            assert_eq!(
                check(
                    s,
                    &[SPEC_SECRET],
                    &spec_headers(truncated),
                    SPEC_PAYLOAD,
                    SPEC_TS
                ),
                Err(Refusal::Mismatch),
                "{truncated:?}"
            );
        }
        let other = new_secret();
        assert_eq!(
            check(s, &[&other], &h, SPEC_PAYLOAD, SPEC_TS),
            Err(Refusal::Mismatch)
        );
        // Several signatures: any one that matches will do; either of two secrets too.
        let several = spec_headers(&format!("v1,bm9wZQ== {SPEC_SIGNATURE} v1a,xyz"));
        assert!(check(s, &[&other, SPEC_SECRET], &several, SPEC_PAYLOAD, SPEC_TS).is_ok());
        let missing = headers(&[("webhook-id", "x".into())]);
        assert!(matches!(
            check(s, &[SPEC_SECRET], &missing, SPEC_PAYLOAD, SPEC_TS),
            Err(Refusal::Missing(_))
        ));
    }

    #[test]
    fn svix_header_names_are_read_too() {
        let h = headers(&[
            ("svix-id", SPEC_ID.into()),
            ("svix-timestamp", SPEC_TS.to_string()),
            ("svix-signature", SPEC_SIGNATURE.into()),
        ]);
        assert!(check(
            Scheme::StandardWebhooks,
            &[SPEC_SECRET],
            &h,
            SPEC_PAYLOAD,
            SPEC_TS
        )
        .is_ok());
    }

    #[test]
    fn stripe_signatures_verify_over_the_timestamp_and_body() {
        let secret = "whsec_test_secret";
        let body = r#"{"id": "evt_1", "type": "invoice.paid"}"#;
        let header = sign_stripe(secret, 1_700_000_000, body.as_bytes());
        let h = headers(&[("stripe-signature", header.clone())]);
        let s = Scheme::Stripe;
        let ok = check(s, &[secret], &h, body, 1_700_000_100).unwrap();
        assert_eq!((ok.message_id, ok.timestamp), (None, 1_700_000_000));
        assert_eq!(
            check(s, &[secret], &h, "{}", 1_700_000_000),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            check(s, &["whsec_other"], &h, body, 1_700_000_000),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            check(s, &[secret], &h, body, 1_700_000_000 + 301),
            Err(Refusal::Stale(300))
        );
        // Stripe's header may carry v0 and several v1 entries (a rolled secret).
        let with_more = headers(&[("stripe-signature", format!("{header},v1=00ff,v0=abc"))]);
        assert!(check(s, &[secret], &with_more, body, 1_700_000_000).is_ok());
        let no_t = headers(&[("stripe-signature", "v1=00".into())]);
        assert_eq!(check(s, &[secret], &no_t, body, 0), Err(Refusal::Malformed));
    }

    #[test]
    fn new_secrets_are_32_random_bytes_in_the_standard_form() {
        let a = new_secret();
        assert!(a.starts_with("whsec_"));
        assert_eq!(key_bytes(Scheme::StandardWebhooks, &a).unwrap().len(), 32);
        assert_ne!(a, new_secret());
        assert_eq!(secret_problem(Scheme::StandardWebhooks, &a), None);
        assert_eq!(secret_problem(Scheme::Stripe, &a), None);
        assert!(secret_problem(Scheme::StandardWebhooks, "whsec_short").is_some());
        assert!(secret_problem(Scheme::Stripe, "has space in it").is_some());
    }
}
