//! Keeping secrets (drone's token, the webhook secret) out of `Debug` output: one future
//! `{:?}` in a log line must not print them.

use std::fmt;

/// Shown instead of a secret.
pub const REDACTED: &str = "<redacted>";

/// Header names whose values are credentials: `authorization` carries drone's bearer token;
/// `signature` is an HMAC made with the webhook secret (not the secret, but no one's business).
pub fn is_credential_header(name: &str) -> bool {
    [
        "authorization",
        "proxy-authorization",
        "signature",
        "cookie",
    ]
    .iter()
    .any(|h| h.eq_ignore_ascii_case(name))
}

/// A value whose `Debug` shows [`REDACTED`], never the value. Wrap a secret field in it, or
/// use it in a hand-written `Debug` (`.field("token", &Redacted(&self.token))`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Redacted<T>(pub T);

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// An optional secret: shows whether it is set, never its value.
pub struct OptRedacted<'a, T>(pub &'a Option<T>);

impl<T> fmt::Debug for OptRedacted<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => write!(f, "Some({REDACTED})"),
            None => f.write_str("None"),
        }
    }
}

/// Headers as `Debug` shows them, with the values of [`is_credential_header`] redacted: for
/// `OutgoingCall` and anything else that carries `authorization`.
pub struct RedactedHeaders<'a>(pub &'a [(String, String)]);

impl fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (k, v) in self.0 {
            if is_credential_header(k) {
                list.entry(&(k, REDACTED));
            } else {
                list.entry(&(k, v));
            }
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_secret_is_shown() {
        assert_eq!(format!("{:?}", Redacted("s3cret")), REDACTED);
        assert_eq!(
            format!("{:?}", OptRedacted(&Some("s3cret"))),
            "Some(<redacted>)"
        );
        assert_eq!(format!("{:?}", OptRedacted::<&str>(&None)), "None");
        let headers = vec![
            (":path".to_string(), "/api".to_string()),
            ("Authorization".to_string(), "Bearer s3cret".to_string()),
            (
                "signature".to_string(),
                "keyId=\"hmac-key\",s3cret".to_string(),
            ),
        ];
        let shown = format!("{:?}", RedactedHeaders(&headers));
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("/api") && shown.contains("Authorization"),
            "{shown}"
        );
    }
}
