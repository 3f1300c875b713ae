//! Small helpers shared by the simulators: HTTP dates, drone's request signing, and tiny_http
//! plumbing (and, re-exported, the seeded PRNG).

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};
use std::io::Read as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// The seeded PRNG of every test-side driver (one splitmix64, in `drone-model`), so a seed
/// reproduces a whole simulated run (which webhooks are lost, which builds fail).
pub use drone_model::Rng;

/// Decodes `%XX` escapes (drone's router does it to path segments; kept with the model).
pub use drone_model::server::percent_decode;

/// Seconds since the Unix epoch, the unit of every drone timestamp.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Go's `http.TimeFormat` ("Mon, 02 Jan 2006 15:04:05 GMT") for a Unix time, as drone puts in
/// its `Date` header.
pub fn http_date(unix: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        d,
        MONTHS[(m - 1) as usize],
        y,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Drone's `Digest` header value: `SHA-256=<base64 std of sha256(body)>`.
pub fn digest_header(body: &[u8]) -> String {
    format!(
        "SHA-256={}",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body))
    )
}

/// Drone's `Signature` header (draft-cavage, hmac-sha256 over `date digest`, keyId
/// `hmac-key`), exactly as `99designs/httpsignatures-go` formats it.
pub fn signature_header(secret: &str, date: &str, digest: &str) -> String {
    let signing = format!("date: {date}\ndigest: {digest}");
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        // HMAC accepts keys of any length; this branch is unreachable in practice.
        Err(_) => return String::new(),
    };
    mac.update(signing.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!(
        "keyId=\"hmac-key\",algorithm=\"hmac-sha256\",signature=\"{sig}\",headers=\"date digest\""
    )
}

/// Hex sha256, used to compare large bodies without keeping two copies around.
pub fn sha256_hex(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A tiny_http header; names and values here are constants or ASCII we built.
pub fn header(name: &str, value: &str) -> tiny_http::Header {
    match tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
        Ok(h) => h,
        Err(()) => panic!("invalid header {name}: {value}"),
    }
}

/// Answers a request with a body and content type, ignoring a client that went away.
pub fn respond(req: tiny_http::Request, code: u16, content_type: &str, body: impl Into<Vec<u8>>) {
    let resp = tiny_http::Response::from_data(body.into())
        .with_status_code(code)
        .with_header(header("Content-Type", content_type));
    let _ = req.respond(resp);
}

/// Reads a request body completely (bounded by `limit`, so a runaway client cannot exhaust
/// memory).
pub fn read_body(req: &mut tiny_http::Request, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    req.as_reader().take(limit).read_to_end(&mut body)?;
    Ok(body)
}

/// The first value of a request header, case-insensitively.
pub fn req_header(req: &tiny_http::Request, name: &str) -> Option<String> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().to_string())
}

/// Splits `/a/b?x=1&y=2` into the path and a query-parameter lookup list.
pub fn split_url(url: &str) -> (String, Vec<(String, String)>) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let params = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    (path.to_string(), params)
}

/// A blocking HTTP client with bounded timeouts; non-2xx answers are values, not errors.
pub fn agent(timeout: std::time::Duration) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(timeout)
        .timeout(timeout)
        .build()
}

/// Outcome of one request sent with [`send`]: the status and body, or a transport error.
pub fn send(req: ureq::Request, body: Option<&[u8]>) -> Result<(u16, Vec<u8>), String> {
    let res = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let code = resp.status();
    let mut buf = Vec::new();
    resp.into_reader()
        .take(64 << 20)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    Ok((code, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_date_matches_go() {
        assert_eq!(http_date(1_577_836_800), "Wed, 01 Jan 2020 00:00:00 GMT");
        assert_eq!(http_date(1_657_910_845), "Fri, 15 Jul 2022 18:47:25 GMT");
    }

    /// The vectors from drone's own unit test and docs (shared fixtures).
    #[test]
    fn signing_matches_drone_vectors() {
        let body = r#"{"event":"user","action":"created","user":{"id":0,"login":"octocat","email":"","machine":false,"admin":false,"active":false,"avatar":"","syncing":false,"synced":0,"created":0,"updated":0,"last_login":0}}"#;
        let digest = digest_header(body.as_bytes());
        assert_eq!(
            digest,
            "SHA-256=bw+FzoGHHfDn+x1a2CDnH9RyUxhWgEP4m68MDZSw73c="
        );
        assert_eq!(
            signature_header(
                "GMEuUHQfmrMRsseWxi9YlIeBtn9lm6im",
                "Wed, 01 Jan 2020 00:00:00 GMT",
                &digest
            ),
            r#"keyId="hmac-key",algorithm="hmac-sha256",signature="Bc5kojyKm/sgX6I1rag0RlJDwWzO+ZEYz5AcOy22CqQ=",headers="date digest""#
        );
        assert!(signature_header(
            "a34999ae0599f579eca8582058b46eee",
            "Fri, 15 Jul 2022 18:47:25 GMT",
            "SHA-256=wyFE2yWKPBpOLHuIVBHf4oD21wY4yINZZzoyR9jB6xo="
        )
        .contains("ObOcdsOSyYMy+0DDlg6X1naqPYY0qe59OrHmjv6Hav0="));
    }

    #[test]
    fn urls_split_and_decode() {
        let (p, q) = split_url("/api/repos/oct%2Fo/x/builds?page=2&per_page=5");
        assert_eq!(p, "/api/repos/oct%2Fo/x/builds");
        assert_eq!(
            q,
            vec![("page".into(), "2".into()), ("per_page".into(), "5".into())]
        );
        assert_eq!(percent_decode("a%20b%zz%"), "a b%zz%");
    }
}
