//! A webhook delivery's signature check, on headers and a body a sender controls: the input is
//! split into the header values and the body. Property: no panic for any input, and nothing
//! verifies that was not signed with the secret (a random input never carries a valid HMAC).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sluice_api::sources::signature::{verify, Scheme};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(4, '\n');
    let (id, ts, sig, body) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    for scheme in [Scheme::StandardWebhooks, Scheme::Stripe] {
        let header = |name: &str| match name {
            "webhook-id" | "svix-id" => Some(id),
            "webhook-timestamp" | "svix-timestamp" => Some(ts),
            "webhook-signature" | "svix-signature" | "stripe-signature" => Some(sig),
            _ => None,
        };
        let now = ts.trim().parse::<i64>().unwrap_or(0);
        let verified = verify(scheme, &[SECRET], header, body.as_bytes(), now, 300);
        assert!(
            verified.is_err() || sig.len() >= 40,
            "a signature too short to be an HMAC verified"
        );
    }
});
