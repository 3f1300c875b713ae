//! Signature parsing and verification must never panic, and must agree with `sign`.
//!
//! Input: `secret \n date \n digest \n signature \n body`; a missing line is a missing header.
//! `now` is the parsed `Date` when it parses (so the fuzzer reaches the HMAC check), otherwise
//! taken from the secret's bytes; the skew bound is 5 minutes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use status_sync::core::signature::{
    body_digest, http_date, parse_http_date, parse_signature_header, sign, verify,
};

const SKEW_MS: u64 = 300_000;
/// 9999-12-31T23:59:59Z: the last instant an IMF-fixdate (4-digit year) can express.
const MAX_DATE_MS: u64 = 253_402_300_799_000;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(5, |&b| b == b'\n');
    let secret = parts.next().unwrap_or(b"");
    let date = parts.next().map(String::from_utf8_lossy);
    let digest = parts.next().map(String::from_utf8_lossy);
    let signature = parts.next().map(String::from_utf8_lossy);
    let body = parts.next().unwrap_or(b"");

    if let Some(sig) = signature.as_deref() {
        let _ = parse_signature_header(sig);
    }
    let parsed_date = date.as_deref().and_then(parse_http_date);
    if let (Some(d), Some(ms)) = (date.as_deref(), parsed_date) {
        // The parser is strict, so whatever it accepts is canonical.
        assert_eq!(
            http_date(ms),
            d,
            "parse_http_date accepted a non-canonical date"
        );
    }
    let fallback_now = secret
        .iter()
        .take(8)
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let now = parsed_date.unwrap_or(fallback_now);
    let _ = verify(
        secret,
        date.as_deref(),
        digest.as_deref(),
        signature.as_deref(),
        body,
        now,
        SKEW_MS,
    );

    // What we sign, we verify; and a different body is refused.
    let now = now % (MAX_DATE_MS + 1);
    let signed = sign(secret, body, now);
    assert_eq!(signed.digest, body_digest(body));
    assert_eq!(parse_http_date(&signed.date), Some(now - now % 1000));
    let check = |b: &[u8]| signed.verify(secret, b, now, SKEW_MS);
    assert_eq!(check(body), Ok(()), "sign -> verify round trip failed");
    let mut other = body.to_vec();
    other.push(b'x');
    assert!(check(&other).is_err(), "verify accepted a different body");
});
