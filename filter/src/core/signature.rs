//! Drone's webhook signatures: draft-cavage HTTP Signatures with `hmac-sha256` over the
//! `Date` and `Digest` headers (drone's `plugin/webhook/webhook.go` with `99designs/httpsignatures-go`).
//!
//! Drone (`plugin/webhook/webhook.go`, via `99designs/httpsignatures-go`) sends:
//!
//! ```text
//! Digest: SHA-256=<base64(sha256(body))>
//! Date: Wed, 01 Jan 2020 00:00:00 GMT
//! Signature: keyId="hmac-key",algorithm="hmac-sha256",signature="<base64>",headers="date digest"
//! ```
//!
//! where the signature is `HMAC-SHA256(secret, "date: <Date>\ndigest: <Digest>")`.
//!
//! [`verify`] is stricter than drone's reference verifier, which checks only the HMAC and that
//! `date` is signed: it also requires `digest` to be signed, recomputes the digest from the raw
//! body and bounds the clock skew of `Date`. [`sign`] produces exactly what drone's sender
//! produces; re-deliveries use it with a fresh `Date`.
//!
//! Sans-IO: time is a parameter (`now_ms`, milliseconds since the Unix epoch).

use super::b64;
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

type HmacSha256 = Hmac<Sha256>;

/// The only algorithm drone uses, and the only one accepted.
pub const ALGORITHM: &str = "hmac-sha256";
/// The `keyId` drone always sends.
pub const KEY_ID: &str = "hmac-key";
/// The headers drone signs, in drone's order.
pub const SIGNED_HEADERS: &str = "date digest";

const MS_PER_SEC: u64 = 1_000;
const MS_PER_DAY: u64 = 86_400_000;

/// Why a webhook's signature was refused. `Display` gives a short reason that never contains
/// the secret, the signature or any header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// No `Signature` header.
    MissingSignature,
    /// No `Date` header.
    MissingDate,
    /// No `Digest` header.
    MissingDigest,
    /// The `Signature` header does not parse; the text says what is wrong.
    MalformedSignature(&'static str),
    /// `algorithm` is not `hmac-sha256`.
    UnsupportedAlgorithm,
    /// The `headers` list lacks `date` or `digest`.
    UnsignedHeaders,
    /// `Digest` is not the SHA-256 digest of the body.
    DigestMismatch,
    /// `Date` is not an IMF-fixdate.
    BadDate,
    /// `Date` is further from now than allowed.
    DateSkew,
    /// The HMAC does not match.
    BadSignature,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MissingSignature => f.write_str("missing Signature header"),
            Self::MissingDate => f.write_str("missing Date header"),
            Self::MissingDigest => f.write_str("missing Digest header"),
            Self::MalformedSignature(why) => write!(f, "malformed Signature header: {why}"),
            Self::UnsupportedAlgorithm => f.write_str("unsupported signature algorithm"),
            Self::UnsignedHeaders => f.write_str("signature does not cover both date and digest"),
            Self::DigestMismatch => f.write_str("Digest does not match the body"),
            Self::BadDate => f.write_str("Date is not an IMF-fixdate"),
            Self::DateSkew => f.write_str("Date is too far from the current time"),
            Self::BadSignature => f.write_str("signature does not match"),
        }
    }
}

impl std::error::Error for SignatureError {}

/// The parameters of a `Signature` header, borrowed from it.
///
/// `headers` holds the names as written (draft-cavage lowercases them; compare with
/// [`str::eq_ignore_ascii_case`]). `Debug` redacts the signature value.
#[derive(Clone, PartialEq, Eq)]
pub struct SignatureHeader<'a> {
    pub key_id: &'a str,
    pub algorithm: &'a str,
    pub signature: &'a str,
    pub headers: Vec<&'a str>,
}

impl std::fmt::Debug for SignatureHeader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureHeader")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm)
            .field("signature", &"<redacted>")
            .field("headers", &self.headers)
            .finish()
    }
}

/// Parses a `Signature` header value: comma-separated `key="value"` parameters, like
/// httpsignatures-go `FromString`, but strict about the syntax.
///
/// - Keys are `[A-Za-z0-9_]+`; only `keyId`, `algorithm`, `signature` and `headers` are known,
///   any other key is rejected, and so is a key given twice.
/// - Values are double-quoted and cannot contain `"` (draft-cavage has no escapes).
/// - Optional spaces or tabs around the commas; nothing else between parameters.
/// - `keyId`, `algorithm` and `signature` are required and non-empty; `headers` defaults to
///   `date` and must be a non-empty list of names separated by single spaces.
///
/// Never panics, on any input.
pub fn parse_signature_header(v: &str) -> Result<SignatureHeader<'_>, SignatureError> {
    use SignatureError::MalformedSignature as Bad;

    let mut key_id: Option<&str> = None;
    let mut algorithm: Option<&str> = None;
    let mut signature: Option<&str> = None;
    let mut headers: Option<&str> = None;

    let mut rest = v.trim_matches(is_ows);
    if rest.is_empty() {
        return Err(Bad("empty"));
    }
    loop {
        let (key, after_key) = rest.split_once('=').ok_or(Bad("expected key=\"value\""))?;
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(Bad("invalid parameter name"));
        }
        let quoted = after_key.strip_prefix('"').ok_or(Bad("value not quoted"))?;
        let (value, after_value) = quoted.split_once('"').ok_or(Bad("unterminated value"))?;

        let slot = match key {
            "keyId" => &mut key_id,
            "algorithm" => &mut algorithm,
            "signature" => &mut signature,
            "headers" => &mut headers,
            _ => return Err(Bad("unknown parameter")),
        };
        if slot.replace(value).is_some() {
            return Err(Bad("duplicate parameter"));
        }

        let after_value = after_value.trim_start_matches(is_ows);
        if after_value.is_empty() {
            break;
        }
        rest = after_value
            .strip_prefix(',')
            .ok_or(Bad("expected ',' between parameters"))?
            .trim_start_matches(is_ows);
    }

    let key_id = non_empty(key_id).ok_or(Bad("missing keyId"))?;
    let algorithm = non_empty(algorithm).ok_or(Bad("missing algorithm"))?;
    let signature = non_empty(signature).ok_or(Bad("missing signature"))?;
    let headers = match headers {
        None => vec!["date"],
        Some(list) => {
            let names: Vec<&str> = list.split(' ').collect();
            if names.iter().any(|n| n.is_empty()) {
                return Err(Bad("empty name in headers"));
            }
            names
        }
    };
    Ok(SignatureHeader {
        key_id,
        algorithm,
        signature,
        headers,
    })
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn non_empty(v: Option<&str>) -> Option<&str> {
    v.filter(|s| !s.is_empty())
}

/// The `Digest` header drone sends for `body`: `SHA-256=<base64 of its SHA-256>`.
pub fn body_digest(body: &[u8]) -> String {
    format!("SHA-256={}", b64::encode(&Sha256::digest(body)))
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Formats `now_ms` (milliseconds since the Unix epoch, truncated to the second) as an RFC 7231
/// IMF-fixdate, as Go's `http.TimeFormat` does: `Wed, 01 Jan 2020 00:00:00 GMT`.
///
/// Years after 9999 get more than four digits (Go does the same); [`parse_http_date`] refuses
/// them.
pub fn http_date(now_ms: u64) -> String {
    let days = now_ms / MS_PER_DAY;
    let secs_of_day = (now_ms % MS_PER_DAY) / MS_PER_SEC;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday.
    let weekday = WEEKDAYS
        .get(((days + 4) % 7) as usize)
        .copied()
        .unwrap_or("???");
    let month_name = MONTHS
        .get(month.wrapping_sub(1) as usize)
        .copied()
        .unwrap_or("???");
    format!(
        "{weekday}, {day:02} {month_name} {year:04} {:02}:{:02}:{:02} GMT",
        secs_of_day / 3600,
        secs_of_day / 60 % 60,
        secs_of_day % 60
    )
}

/// Parses an RFC 7231 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) into milliseconds since the
/// Unix epoch.
///
/// Strict: exactly that shape (29 bytes), English day and month names with this capitalisation,
/// a day name that matches the date, a valid calendar date (leap years included), a time
/// within `00:00:00`..=`23:59:59` (no leap second), `GMT`, a year from 1970 to 9999. The obsolete
/// RFC 850 and asctime formats are refused. `None` for anything else; never panics.
pub fn parse_http_date(s: &str) -> Option<u64> {
    let bytes: &[u8; 29] = s.as_bytes().try_into().ok()?;
    let [w0, w1, w2, b',', b' ', d0, d1, b' ', m0, m1, m2, b' ', y0, y1, y2, y3, b' ', h0, h1, b':', i0, i1, b':', s0, s1, b' ', b'G', b'M', b'T'] =
        *bytes
    else {
        return None;
    };
    let weekday = WEEKDAYS.iter().position(|w| w.as_bytes() == [w0, w1, w2])?;
    let month = MONTHS.iter().position(|m| m.as_bytes() == [m0, m1, m2])? as u64 + 1;
    let day = digits(&[d0, d1])?;
    let year = digits(&[y0, y1, y2, y3])?;
    let hour = digits(&[h0, h1])?;
    let minute = digits(&[i0, i1])?;
    let second = digits(&[s0, s1])?;
    if year < 1970
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if (days + 4) % 7 != weekday as u64 {
        return None;
    }
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(secs * MS_PER_SEC)
}

/// ASCII decimal digits to a number; `None` if any byte is not a digit.
fn digits(ds: &[u8]) -> Option<u64> {
    ds.iter().try_fold(0u64, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u64::from(d - b'0'))
    })
}

fn is_leap_year(year: u64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31) in the proleptic Gregorian calendar.
/// Howard Hinnant's `civil_from_days`, restricted to non-negative days (so all unsigned, and no
/// overflow for any `u64` day count derived from milliseconds).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // shift the epoch to 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146_096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365, from March 1st
    let mp = (5 * doy + 2) / 153; // 0..=11, March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`], for `year >= 1970` and a valid month and day.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y % 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Verifies a drone webhook: the `Date`, `Digest` and `Signature` header values (first value
/// of each, as received), the raw body, the current time and the allowed clock skew.
///
/// Checks, in order: the three headers are present; the `Signature` header parses; its
/// algorithm is `hmac-sha256`; its `headers` list names both `date` and `digest`, each once, and
/// nothing else (anything else, e.g. `(request-target)`, is refused as malformed: we only see
/// these two headers); `Digest` equals [`body_digest`] of the body (constant-time compare); `Date`
/// is an IMF-fixdate within `max_skew_ms` of `now_ms` in either direction; and the base64 MAC
/// equals `HMAC-SHA256(secret, signing string)` over exactly the listed headers in the listed
/// order (constant-time compare). `keyId` is not checked (drone always sends `hmac-key`).
pub fn verify(
    secret: &[u8],
    date: Option<&str>,
    digest: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_ms: u64,
    max_skew_ms: u64,
) -> Result<(), SignatureError> {
    verify_headers(secret, date, digest, signature, now_ms, max_skew_ms)?;
    verify_digest(digest, body)
}

/// The body half of [`verify`]: `Digest` equals [`body_digest`] of the body (constant time).
pub fn verify_digest(digest: Option<&str>, body: &[u8]) -> Result<(), SignatureError> {
    let digest = digest.ok_or(SignatureError::MissingDigest)?;
    if constant_time_eq(digest.as_bytes(), body_digest(body).as_bytes()) {
        Ok(())
    } else {
        Err(SignatureError::DigestMismatch)
    }
}

/// The digest of a body computed as it streams past, without keeping it.
#[derive(Clone, Default)]
pub struct DigestStream(Sha256);

impl DigestStream {
    pub fn update(&mut self, chunk: &[u8]) {
        self.0.update(chunk);
    }

    /// Compares with the `Digest` header (constant time).
    pub fn check(self, digest: Option<&str>) -> Result<(), SignatureError> {
        let digest = digest.ok_or(SignatureError::MissingDigest)?;
        let ours = format!("SHA-256={}", b64::encode(&self.0.finalize()));
        if constant_time_eq(digest.as_bytes(), ours.as_bytes()) {
            Ok(())
        } else {
            Err(SignatureError::DigestMismatch)
        }
    }
}

/// The header half of [`verify`]: everything but the body's digest. The HMAC covers only the
/// `Date` and `Digest` headers, so a forged or unsigned webhook is recognised before its body
/// arrives, and can be refused before anything reaches the pipeline.
pub fn verify_headers(
    secret: &[u8],
    date: Option<&str>,
    digest: Option<&str>,
    signature: Option<&str>,
    now_ms: u64,
    max_skew_ms: u64,
) -> Result<(), SignatureError> {
    let signature = signature.ok_or(SignatureError::MissingSignature)?;
    let date = date.ok_or(SignatureError::MissingDate)?;
    let digest = digest.ok_or(SignatureError::MissingDigest)?;

    let header = parse_signature_header(signature)?;
    if header.algorithm != ALGORITHM {
        return Err(SignatureError::UnsupportedAlgorithm);
    }
    let (mut has_date, mut has_digest) = (false, false);
    for name in &header.headers {
        let seen = if name.eq_ignore_ascii_case("date") {
            &mut has_date
        } else if name.eq_ignore_ascii_case("digest") {
            &mut has_digest
        } else {
            return Err(SignatureError::MalformedSignature(
                "unsupported header in headers",
            ));
        };
        if std::mem::replace(seen, true) {
            return Err(SignatureError::MalformedSignature(
                "duplicate name in headers",
            ));
        }
    }
    if !(has_date && has_digest) {
        return Err(SignatureError::UnsignedHeaders);
    }

    let date_ms = parse_http_date(date).ok_or(SignatureError::BadDate)?;
    if date_ms.abs_diff(now_ms) > max_skew_ms {
        return Err(SignatureError::DateSkew);
    }

    let mac_bytes = b64::decode(header.signature).ok_or(SignatureError::MalformedSignature(
        "signature is not base64",
    ))?;
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| SignatureError::BadSignature)?;
    for (i, name) in header.headers.iter().enumerate() {
        if i > 0 {
            mac.update(b"\n");
        }
        // Both names were checked above to be date or digest.
        let (label, value): (&[u8], &str) = if name.eq_ignore_ascii_case("date") {
            (b"date: ", date)
        } else {
            (b"digest: ", digest)
        };
        mac.update(label);
        mac.update(value.as_bytes());
    }
    mac.verify_slice(&mac_bytes)
        .map_err(|_| SignatureError::BadSignature)
}

/// HMAC-SHA256 of the concatenation of `parts` under `key` (the queue's message tags).
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    match HmacSha256::new_from_slice(key) {
        Ok(mut mac) => {
            for part in parts {
                mac.update(part);
            }
            mac.finalize().into_bytes().into()
        }
        // Unreachable: HMAC accepts keys of any length. A zero tag verifies nothing made
        // with a real key.
        Err(_) => [0; 32],
    }
}

/// Whether `tag` is the HMAC-SHA256 of `msg` under `key`, compared in constant time.
pub(crate) fn hmac_sha256_verify(key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
    HmacSha256::new_from_slice(key).is_ok_and(|mut mac| {
        mac.update(msg);
        mac.verify_slice(tag).is_ok()
    })
}

/// Compares two byte strings in time that depends only on their lengths ([`subtle`]'s
/// `ConstantTimeEq`, which `hmac`'s own `verify_slice` uses too).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

/// The headers drone's sender adds to a webhook (besides `X-Drone-Event` and `Content-Type`).
/// `Debug` shows the `Date` and `Digest` but not the `Signature`: an HMAC made with the
/// webhook secret, which with the body would let anyone replay the webhook within
/// `max_clock_skew_ms`.
#[derive(Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `Date`: [`http_date`] of the signing time.
    pub date: String,
    /// `Digest`: [`body_digest`] of the body.
    pub digest: String,
    /// `Signature`: `keyId="hmac-key",algorithm="hmac-sha256",signature="…",headers="date digest"`,
    /// keys in the order httpsignatures-go writes them.
    pub signature: String,
}

impl std::fmt::Debug for SignedHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedHeaders")
            .field("date", &self.date)
            .field("digest", &self.digest)
            .field("signature", &super::redact::Redacted(&self.signature))
            .finish()
    }
}

impl SignedHeaders {
    /// [`verify`] with these headers: what the receiver of a webhook signed with them checks
    /// (the round trip the tests and the fuzzer hold [`sign`] to).
    pub fn verify(
        &self,
        secret: &[u8],
        body: &[u8],
        now_ms: u64,
        max_skew_ms: u64,
    ) -> Result<(), SignatureError> {
        verify(
            secret,
            Some(&self.date),
            Some(&self.digest),
            Some(&self.signature),
            body,
            now_ms,
            max_skew_ms,
        )
    }
}

/// Signs `body` at `now_ms` exactly as drone's sender does. Re-deliveries use this with the
/// current time, so the pipeline's verifier sees a fresh `Date`.
pub fn sign(secret: &[u8], body: &[u8], now_ms: u64) -> SignedHeaders {
    let date = http_date(now_ms);
    let digest = body_digest(body);
    let mac = match HmacSha256::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(format!("date: {date}\ndigest: {digest}").as_bytes());
            b64::encode(&mac.finalize().into_bytes())
        }
        // Unreachable: HMAC accepts keys of any length. Should it ever fail, an empty MAC makes
        // the receiver refuse the webhook instead of trapping the VM here.
        Err(_) => String::new(),
    };
    let signature = format!(
        "keyId=\"{KEY_ID}\",algorithm=\"{ALGORITHM}\",signature=\"{mac}\",headers=\"{SIGNED_HEADERS}\""
    );
    SignedHeaders {
        date,
        digest,
        signature,
    }
}

/// A stable identifier for one build transition: `drone-<repo_id>-<number>-<version>`.
///
/// It depends only on the transition (repository id, build number and the build's optimistic-lock
/// `version`, which goes up on every write), never on the attempt: the live webhook and every
/// re-delivery of the same transition carry the same id, so the pipeline can drop duplicates.
pub fn webhook_id(repo_id: u64, number: u64, version: u64) -> String {
    format!("drone-{repo_id}-{number}-{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKEW: u64 = 5 * 60 * 1000;

    struct Vector {
        name: String,
        secret: String,
        body: Option<String>,
        date: String,
        digest: String,
        signature_header: String,
    }

    fn vectors() -> Vec<Vector> {
        let path = drone_model::fixtures::SIGNATURE_VECTORS;
        let text = drone_model::fixtures::text(path);
        let json: serde_json::Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
        let field = |v: &serde_json::Value, k: &str| -> String {
            v[k].as_str()
                .unwrap_or_else(|| panic!("{path}: field {k} missing or not a string"))
                .to_owned()
        };
        let list = json
            .as_array()
            .unwrap_or_else(|| panic!("{path}: not an array"));
        assert!(list.len() >= 2, "{path}: expected at least 2 vectors");
        list.iter()
            .map(|v| Vector {
                name: field(v, "name"),
                secret: field(v, "secret"),
                body: v["body"].as_str().map(str::to_owned),
                date: field(v, "date"),
                digest: field(v, "digest"),
                signature_header: field(v, "signature_header"),
            })
            .collect()
    }

    /// A signed request's headers in a log line or a panic message show when it was signed
    /// and what body it covers, never its `Signature` (with the body, a replayable webhook).
    #[test]
    fn signed_headers_debug_hides_the_signature() {
        let h = sign(SECRET, b"{\"event\":\"build\"}", 1_717_236_000_000);
        let mac = h
            .signature
            .split("signature=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap();
        assert!(mac.len() > 20, "{}", h.signature);
        for shown in [
            format!("{h:?}"),
            format!("{h:#?}"),
            format!("{:?}", Some(&h)),
        ] {
            assert!(!shown.contains(mac), "{shown}");
            assert!(!shown.contains(&h.signature), "{shown}");
            assert!(shown.contains(super::super::redact::REDACTED), "{shown}");
            assert!(
                shown.contains(&h.date) && shown.contains(&h.digest),
                "{shown}"
            );
        }
    }

    fn hmac_b64(secret: &[u8], date: &str, digest: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(secret).unwrap();
        mac.update(format!("date: {date}\ndigest: {digest}").as_bytes());
        b64::encode(&mac.finalize().into_bytes())
    }

    /// The reason names what is wrong (it is logged, and `monitor` mode exists to read it): a
    /// parameter name outside `[A-Za-z0-9_]` is not merely "unknown".
    #[test]
    fn malformed_parameter_names_are_named_as_such() {
        use SignatureError::MalformedSignature as Bad;
        for header in [r#"key-id="a""#, r#"keyId="a",sig nature="b""#, r#"=x"#] {
            assert_eq!(
                parse_signature_header(header).err(),
                Some(Bad("invalid parameter name")),
                "{header}"
            );
        }
        assert_eq!(
            parse_signature_header(r#"key_id="a""#).err(),
            Some(Bad("unknown parameter"))
        );
    }

    #[test]
    fn vector_1_drone_unit_test_fully() {
        let v = &vectors()[0];
        let body = v.body.as_deref().expect("vector 1 has a body");
        assert_eq!(body_digest(body.as_bytes()), v.digest, "{}", v.name);
        let parsed = parse_signature_header(&v.signature_header).unwrap();
        assert_eq!(parsed.key_id, KEY_ID);
        assert_eq!(parsed.algorithm, ALGORITHM);
        assert_eq!(parsed.headers, vec!["date", "digest"]);
        assert_eq!(
            hmac_b64(v.secret.as_bytes(), &v.date, &v.digest),
            parsed.signature
        );

        let now = parse_http_date(&v.date).unwrap();
        assert_eq!(now, 1_577_836_800_000);
        let ok = verify(
            v.secret.as_bytes(),
            Some(&v.date),
            Some(&v.digest),
            Some(&v.signature_header),
            body.as_bytes(),
            now,
            SKEW,
        );
        assert_eq!(ok, Ok(()));

        // sign() reproduces drone's headers byte for byte.
        let signed = sign(v.secret.as_bytes(), body.as_bytes(), now);
        assert_eq!(signed.date, v.date);
        assert_eq!(signed.digest, v.digest);
        assert_eq!(signed.signature, v.signature_header);
    }

    #[test]
    fn vector_2_drone_docs_hmac_only() {
        let v = &vectors()[1];
        assert!(v.body.is_none(), "{}: the docs publish no body", v.name);
        let parsed = parse_signature_header(&v.signature_header).unwrap();
        assert_eq!(parsed.headers, vec!["date", "digest"]);
        assert_eq!(
            hmac_b64(v.secret.as_bytes(), &v.date, &v.digest),
            parsed.signature
        );
        assert_eq!(parse_http_date(&v.date), Some(1_657_910_845_000));
        assert_eq!(http_date(1_657_910_845_000), v.date);
    }

    const SECRET: &[u8] = b"s3cr3t";
    const BODY: &[u8] = br#"{"event":"build","action":"updated"}"#;
    const NOW: u64 = 1_700_000_000_123;

    fn check(h: &SignedHeaders, body: &[u8], now: u64) -> Result<(), SignatureError> {
        h.verify(SECRET, body, now, SKEW)
    }

    /// `h` with another `Signature` header, checked against [`BODY`] at [`NOW`].
    fn check_signature(h: &SignedHeaders, signature: &str) -> Result<(), SignatureError> {
        let t = SignedHeaders {
            signature: signature.to_string(),
            ..h.clone()
        };
        check(&t, BODY, NOW)
    }

    #[test]
    fn sign_verify_round_trip() {
        let h = sign(SECRET, BODY, NOW);
        assert_eq!(h.date, "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(check(&h, BODY, NOW), Ok(()));
        assert_eq!(check(&h, BODY, NOW + SKEW - 123), Ok(()));
        let empty = sign(b"", b"", 0);
        assert_eq!(empty.date, "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(empty.verify(b"", b"", 0, 0), Ok(()));
        // Long keys (hashed first by HMAC) work too.
        let long = [7u8; 200];
        let h = sign(&long, BODY, NOW);
        let r = h.verify(&long, BODY, NOW, SKEW);
        assert_eq!(r, Ok(()));
    }

    #[test]
    fn tampering_is_detected() {
        let h = sign(SECRET, BODY, NOW);
        // Body changed: its digest no longer matches.
        assert_eq!(check(&h, b"{}", NOW), Err(SignatureError::DigestMismatch));
        // Body and digest changed consistently: the HMAC no longer matches.
        let other = b"{}";
        let t = SignedHeaders {
            digest: body_digest(other),
            ..h.clone()
        };
        assert_eq!(check(&t, other, NOW), Err(SignatureError::BadSignature));
        // Date changed by one second.
        let t = SignedHeaders {
            date: http_date(NOW + 1000),
            ..h.clone()
        };
        assert_eq!(check(&t, BODY, NOW), Err(SignatureError::BadSignature));
        // Wrong secret.
        let r = h.verify(b"other", BODY, NOW, SKEW);
        assert_eq!(r, Err(SignatureError::BadSignature));
        // MAC bytes altered (one bit) but still valid base64 of the right length.
        let mac = h.signature.split('"').nth(5).unwrap();
        let mut raw = b64::decode(mac).unwrap();
        raw[0] ^= 1;
        let t = SignedHeaders {
            signature: h.signature.replace(mac, &b64::encode(&raw)),
            ..h.clone()
        };
        assert_eq!(check(&t, BODY, NOW), Err(SignatureError::BadSignature));
        // Truncated MAC.
        let t = SignedHeaders {
            signature: format!(
                "keyId=\"hmac-key\",algorithm=\"hmac-sha256\",signature=\"{}\",headers=\"date digest\"",
                b64::encode(&[0u8; 16])
            ),
            ..h.clone()
        };
        assert_eq!(check(&t, BODY, NOW), Err(SignatureError::BadSignature));
        // Not base64.
        let t = SignedHeaders {
            signature: "keyId=\"hmac-key\",algorithm=\"hmac-sha256\",signature=\"!!!\",headers=\"date digest\"".into(),
            ..h
        };
        assert_eq!(
            check(&t, BODY, NOW),
            Err(SignatureError::MalformedSignature(
                "signature is not base64"
            ))
        );
    }

    #[test]
    fn skew_is_bounded_both_ways() {
        let h = sign(SECRET, BODY, NOW);
        let date_ms = NOW - 123; // Date has second resolution
        assert_eq!(check(&h, BODY, date_ms + SKEW), Ok(()));
        assert_eq!(check(&h, BODY, date_ms - SKEW), Ok(()));
        assert_eq!(
            check(&h, BODY, date_ms + SKEW + 1),
            Err(SignatureError::DateSkew)
        );
        assert_eq!(
            check(&h, BODY, date_ms - SKEW - 1),
            Err(SignatureError::DateSkew)
        );
        assert_eq!(check(&h, BODY, 0), Err(SignatureError::DateSkew));
        assert_eq!(check(&h, BODY, u64::MAX), Err(SignatureError::DateSkew));
        assert_eq!(h.verify(SECRET, BODY, date_ms, 0), Ok(()));
    }

    #[test]
    fn a_genuine_signature_over_another_body_is_a_digest_mismatch() {
        let h = sign(SECRET, BODY, NOW);
        let (d, g, s) = (
            Some(h.date.as_str()),
            Some(h.digest.as_str()),
            Some(h.signature.as_str()),
        );
        assert_eq!(verify_headers(SECRET, d, g, s, NOW, SKEW), Ok(()));
        assert_eq!(verify_digest(g, b"{}"), Err(SignatureError::DigestMismatch));
        assert_eq!(
            verify(SECRET, d, g, s, b"{}", NOW, SKEW),
            Err(SignatureError::DigestMismatch)
        );
        assert_eq!(
            verify_digest(None, BODY),
            Err(SignatureError::MissingDigest)
        );
    }

    #[test]
    fn missing_and_bad_headers() {
        let h = sign(SECRET, BODY, NOW);
        let v = |date: Option<&str>, digest: Option<&str>, sig: Option<&str>| {
            verify(SECRET, date, digest, sig, BODY, NOW, SKEW)
        };
        let (d, g, s) = (
            Some(h.date.as_str()),
            Some(h.digest.as_str()),
            Some(h.signature.as_str()),
        );
        assert_eq!(v(d, g, s), Ok(()));
        assert_eq!(v(d, g, None), Err(SignatureError::MissingSignature));
        assert_eq!(v(None, g, s), Err(SignatureError::MissingDate));
        assert_eq!(v(d, None, s), Err(SignatureError::MissingDigest));
        assert_eq!(v(None, None, None), Err(SignatureError::MissingSignature));
        assert_eq!(v(Some(""), g, s), Err(SignatureError::BadDate));
        assert_eq!(v(d, Some(""), s), Err(SignatureError::BadSignature));
        assert_eq!(
            v(Some("2023-11-14T22:13:20Z"), g, s),
            Err(SignatureError::BadDate)
        );
        // A changed Digest header breaks the MAC, which covers it: refused before the body.
        let lower = h.digest.replacen("SHA-256=", "sha-256=", 1);
        assert_eq!(v(d, Some(&lower), s), Err(SignatureError::BadSignature));
        assert_eq!(
            v(d, Some(&format!(" {}", h.digest)), s),
            Err(SignatureError::BadSignature)
        );
    }

    fn sig_with(params: &str) -> String {
        params.replace("MAC", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
    }

    #[test]
    fn signed_header_list_must_be_date_and_digest() {
        use SignatureError::{BadSignature, UnsignedHeaders};
        let h = sign(SECRET, BODY, NOW);
        let mac = h.signature.split('"').nth(5).unwrap().to_owned();
        let with = |headers: &str| {
            format!("keyId=\"hmac-key\",algorithm=\"hmac-sha256\",signature=\"{mac}\"{headers}")
        };
        let r = |sig: String| check_signature(&h, &sig);
        for (headers, want) in [
            (",headers=\"date digest\"", Ok(())),
            // Upper-case names are accepted (draft-cavage lowercases them).
            (",headers=\"Date Digest\"", Ok(())),
            // Only date: drone's library accepts this, we do not.
            (",headers=\"date\"", Err(UnsignedHeaders)),
            ("", Err(UnsignedHeaders)),
            (",headers=\"digest\"", Err(UnsignedHeaders)),
            // Reversed order is a different signing string.
            (",headers=\"digest date\"", Err(BadSignature)),
        ] {
            assert_eq!(r(with(headers)), want, "{headers}");
        }
        // A correct MAC over the reversed order verifies.
        let mut mac2 = HmacSha256::new_from_slice(SECRET).unwrap();
        mac2.update(format!("digest: {}\ndate: {}", h.digest, h.date).as_bytes());
        let rev = format!(
            "keyId=\"hmac-key\",algorithm=\"hmac-sha256\",signature=\"{}\",headers=\"digest date\"",
            b64::encode(&mac2.finalize().into_bytes())
        );
        assert_eq!(r(rev), Ok(()));
        // Other headers cannot be checked here; a repeated or empty name, or an empty list, is
        // malformed too.
        for headers in [
            "(request-target) date digest",
            "date digest host",
            "date digest date",
            "date  digest",
            "",
        ] {
            let got = r(with(&format!(",headers=\"{headers}\"")));
            assert!(
                matches!(got, Err(SignatureError::MalformedSignature(_))),
                "{headers}: {got:?}"
            );
        }
    }

    #[test]
    fn algorithm_must_be_hmac_sha256() {
        let h = sign(SECRET, BODY, NOW);
        for alg in [
            "hmac-sha1",
            "rsa-sha256",
            "hs2019",
            "HMAC-SHA256",
            "hmac-sha512",
        ] {
            let sig = h.signature.replace("hmac-sha256", alg);
            let r = check_signature(&h, &sig);
            assert_eq!(r, Err(SignatureError::UnsupportedAlgorithm), "{alg}");
        }
    }

    #[test]
    fn parse_accepts_drone_and_variants() {
        let drone = sig_with(
            "keyId=\"hmac-key\",algorithm=\"hmac-sha256\",signature=\"MAC\",headers=\"date digest\"",
        );
        let p = parse_signature_header(&drone).unwrap();
        assert_eq!(p.key_id, "hmac-key");
        assert_eq!(p.headers, vec!["date", "digest"]);
        // Any order, spaces around commas, headers defaulting to date.
        let p = parse_signature_header(
            " headers=\"date digest\" , signature=\"x\",\tkeyId=\"k\",algorithm=\"a\" ",
        )
        .unwrap();
        assert_eq!((p.key_id, p.algorithm, p.signature), ("k", "a", "x"));
        let p = parse_signature_header("keyId=\"k\",algorithm=\"a\",signature=\"x\"").unwrap();
        assert_eq!(p.headers, vec!["date"]);
        // Debug never shows the MAC.
        let dbg = format!("{p:?}");
        assert!(dbg.contains("redacted") && !dbg.contains("\"x\""), "{dbg}");
    }

    #[test]
    fn parse_rejects_garbage() {
        use SignatureError::MalformedSignature as M;
        let bad = [
            "",
            "   ",
            "garbage",
            "Signature keyId=\"k\",algorithm=\"a\",signature=\"x\"",
            "keyId=\"k\",algorithm=\"a\",signature=\"x\",",
            ",keyId=\"k\",algorithm=\"a\",signature=\"x\"",
            "keyId=\"k\",,algorithm=\"a\",signature=\"x\"",
            "keyId=\"k\" algorithm=\"a\",signature=\"x\"",
            "keyId=\"k\",algorithm=\"a\",signature=x",
            "keyId=\"k\",algorithm=\"a\",signature=\"x",
            "keyId=\"k\",algorithm=\"a\",signature=\"x\"y",
            "keyId = \"k\",algorithm=\"a\",signature=\"x\"",
            "key-id=\"k\",algorithm=\"a\",signature=\"x\"",
            "=\"k\",algorithm=\"a\",signature=\"x\"",
            "keyid=\"k\",algorithm=\"a\",signature=\"x\"",
            "keyId=\"k\",algorithm=\"a\",signature=\"x\",extra=\"1\"",
            "keyId=\"k\",algorithm=\"a\",signature=\"x\",created=\"1\"",
            "keyId=\"\",algorithm=\"a\",signature=\"x\"",
            "keyId=\"k\",algorithm=\"\",signature=\"x\"",
            "keyId=\"k\",algorithm=\"a\",signature=\"\"",
            "algorithm=\"a\",signature=\"x\"",
            "keyId=\"k\",signature=\"x\"",
            "keyId=\"k\",algorithm=\"a\"",
            "keyId=\"k\",algorithm=\"a\",signature=\"x\",headers=\"\"",
            "keyId=\"k\",algorithm=\"a\",signature=\"x\",headers=\" date\"",
            "keyId=\"k\",algorithm=\"a\",signature=\"x\",headers=\"date \"",
            "keyId=\"ké\",algorithm=\"a\",signature=\"x\"\u{0}",
            "\"\"\"===,,,",
        ];
        for s in bad {
            assert!(matches!(parse_signature_header(s), Err(M(_))), "{s:?}");
        }
    }

    #[test]
    fn parse_rejects_duplicate_keys() {
        let dups = [
            "keyId=\"k\",keyId=\"k\",algorithm=\"a\",signature=\"x\"",
            "keyId=\"k\",algorithm=\"a\",algorithm=\"a\",signature=\"x\"",
            "keyId=\"k\",algorithm=\"a\",signature=\"x\",signature=\"y\"",
            "keyId=\"k\",algorithm=\"a\",signature=\"x\",headers=\"date\",headers=\"date digest\"",
            // An empty first value still counts.
            "keyId=\"\",keyId=\"k\",algorithm=\"a\",signature=\"x\"",
        ];
        for s in dups {
            assert_eq!(
                parse_signature_header(s),
                Err(SignatureError::MalformedSignature("duplicate parameter")),
                "{s}"
            );
        }
        // In verify too, with an otherwise valid header.
        let h = sign(SECRET, BODY, NOW);
        let sig = format!("{},signature=\"AAAA\"", h.signature);
        let r = check_signature(&h, &sig);
        assert_eq!(
            r,
            Err(SignatureError::MalformedSignature("duplicate parameter"))
        );
    }

    #[test]
    fn display_is_short_and_leaks_nothing() {
        let h = sign(SECRET, BODY, NOW);
        let mac = h.signature.split('"').nth(5).unwrap();
        let all = [
            SignatureError::MissingSignature,
            SignatureError::MissingDate,
            SignatureError::MissingDigest,
            SignatureError::MalformedSignature("x"),
            SignatureError::UnsupportedAlgorithm,
            SignatureError::UnsignedHeaders,
            SignatureError::DigestMismatch,
            SignatureError::BadDate,
            SignatureError::DateSkew,
            SignatureError::BadSignature,
        ];
        for e in all {
            let s = e.to_string();
            assert!(!s.is_empty() && s.len() < 80, "{s}");
            assert!(!s.contains("s3cr3t") && !s.contains(mac), "{s}");
        }
    }

    #[test]
    fn http_date_known_values() {
        let known: [(u64, &str); 11] = [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (999, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777_000, "Sun, 06 Nov 1994 08:49:37 GMT"), // RFC 7231's example
            (951_782_400_000, "Tue, 29 Feb 2000 00:00:00 GMT"), // leap year divisible by 400
            (1_577_836_800_000, "Wed, 01 Jan 2020 00:00:00 GMT"),
            (1_582_934_400_000, "Sat, 29 Feb 2020 00:00:00 GMT"),
            (1_583_020_800_000, "Sun, 01 Mar 2020 00:00:00 GMT"),
            (1_657_910_845_000, "Fri, 15 Jul 2022 18:47:25 GMT"),
            (2_147_483_647_000, "Tue, 19 Jan 2038 03:14:07 GMT"),
            (4_107_542_400_000, "Mon, 01 Mar 2100 00:00:00 GMT"), // 2100 is not a leap year
            (4_133_980_799_000, "Fri, 31 Dec 2100 23:59:59 GMT"),
        ];
        for (ms, s) in known {
            assert_eq!(http_date(ms), s, "{ms}");
            assert_eq!(parse_http_date(s), Some(ms - ms % 1000), "{s}");
        }
        assert_eq!(
            parse_http_date("Fri, 31 Dec 9999 23:59:59 GMT"),
            Some(253_402_300_799_000)
        );
        assert_eq!(
            http_date(253_402_300_800_000),
            "Sat, 01 Jan 10000 00:00:00 GMT"
        );
        // Never panics at the extremes.
        let _ = http_date(u64::MAX);
    }

    #[test]
    fn http_date_round_trips_across_years() {
        // Every day (at varying times) from 1970 to 2410, which covers 1972..2408 leap years and
        // the 2100, 2200, 2300 non-leap centuries and the 2000 and 2400 leap ones.
        let mut ms = 0u64;
        let mut feb29 = 0;
        while ms < 13_885_084_800_000 {
            let s = http_date(ms);
            assert_eq!(parse_http_date(&s), Some(ms - ms % 1000), "{s}");
            if s.contains(" 29 Feb ") {
                let year: u64 = s[12..16].parse().unwrap();
                assert!(is_leap_year(year), "{s}");
                feb29 += 1;
            }
            ms += MS_PER_DAY + 3_723_001; // a day plus 1h 2m 3.001s
        }
        assert!(feb29 > 50, "{feb29}");
        for year in [2100, 2200, 2300, 2500] {
            let s = format!("Mon, 29 Feb {year} 00:00:00 GMT");
            assert_eq!(parse_http_date(&s), None, "{s}");
        }
        // Year boundaries.
        for year in 1970..=2400u64 {
            let days = days_from_civil(year, 1, 1);
            assert_eq!(civil_from_days(days), (year, 1, 1));
            assert_eq!(
                civil_from_days(days - u64::from(year > 1970)).1,
                if year > 1970 { 12 } else { 1 }
            );
            let len = days_from_civil(year + 1, 1, 1) - days;
            assert_eq!(len, if is_leap_year(year) { 366 } else { 365 }, "{year}");
        }
    }

    #[test]
    fn parse_http_date_is_strict() {
        assert!(parse_http_date("Wed, 01 Jan 2020 00:00:00 GMT").is_some());
        let bad = [
            "",
            "Wed, 01 Jan 2020 00:00:00 UTC",
            "Wed, 01 Jan 2020 00:00:00 GMT ",
            " Wed, 01 Jan 2020 00:00:00 GMT",
            "Wed, 1 Jan 2020 00:00:00 GMT",
            "Wed,  1 Jan 2020 00:00:00 GMT",
            "wed, 01 Jan 2020 00:00:00 GMT",
            "Wed, 01 JAN 2020 00:00:00 GMT",
            "Thu, 01 Jan 2020 00:00:00 GMT", // wrong weekday
            "Wed, 00 Jan 2020 00:00:00 GMT",
            "Wed, 32 Jan 2020 00:00:00 GMT",
            "Sun, 31 Apr 2022 00:00:00 GMT",
            "Tue, 29 Feb 2022 00:00:00 GMT",
            "Wed, 01 Jan 2020 24:00:00 GMT",
            "Wed, 01 Jan 2020 00:60:00 GMT",
            "Wed, 01 Jan 2020 00:00:60 GMT",
            "Wed, 01 Jan 2020 0a:00:00 GMT",
            "Wed, 01 Jan 2020 +1:00:00 GMT",
            "Wed, 31 Dec 1969 23:59:59 GMT",
            "Wednesday, 01-Jan-20 00:00:00 GMT",
            "Wed Jan  1 00:00:00 2020",
            "Wed, 01 Jan 2020 00:00:00 +0000",
            "Wed, 01 Jan 2020T00:00:00 GMT",
            "Wed, 01 Jan 2020 00:00:00 GMT\n",
            "Wéd, 01 Jan 2020 00:00:00 GM",
        ];
        for s in bad {
            assert_eq!(parse_http_date(s), None, "{s:?}");
        }
    }

    #[test]
    fn webhook_id_is_stable_per_transition() {
        assert_eq!(webhook_id(7, 101, 3), "drone-7-101-3");
        assert_eq!(webhook_id(7, 101, 3), webhook_id(7, 101, 3));
        assert_ne!(webhook_id(7, 101, 3), webhook_id(7, 101, 4));
        assert_ne!(webhook_id(71, 1, 3), webhook_id(7, 11, 3));
        assert_eq!(
            webhook_id(u64::MAX, 0, 1),
            format!("drone-{}-0-1", u64::MAX)
        );
    }
}
