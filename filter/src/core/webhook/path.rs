//! Which requests are drone's build webhooks: the method, the event header, and the one path
//! policy that `is_delivery_path` (evidence: the exact `webhook_path`), `is_webhook_path`
//! (what `enforce` covers) and the shipped Envoy route (`webhook_route_regex`) share.

/// True when a request is one of drone's build webhooks that we should observe: method `POST`,
/// path exactly `webhook_path` (see [`is_delivery_path`]) and `X-Drone-Event: build`.
///
/// The method is compared case-sensitively (HTTP methods are), the event header
/// case-insensitively and trimmed, to tolerate proxies that rewrite header values.
pub fn is_build_webhook(
    method: &str,
    path: &str,
    drone_event: Option<&str>,
    webhook_path: &str,
) -> bool {
    is_build_event(method, drone_event) && is_delivery_path(path, webhook_path)
}

/// `POST` with `X-Drone-Event: build` (see [`is_build_webhook`]).
pub fn is_build_event(method: &str, drone_event: Option<&str>) -> bool {
    method == "POST" && drone_event.is_some_and(|e| e.trim().eq_ignore_ascii_case("build"))
}

/// Evidence of delivery: the request's `:path` is exactly `webhook_path`, byte for byte (query
/// included). Only such a request tells what the pipeline answered to drone's webhook: the
/// same signed bytes sent to `/hook/x`, `/HOOK` or `/hook?x=1` may reach another handler (or
/// none, a 404), so the answer says nothing about the transition, and a replay there must not
/// settle a lost state (issue 20, finding 4). Those requests are not observed at all, not even
/// as hints; in `enforce` they are still checked ([`is_webhook_path`]).
pub fn is_delivery_path(path: &str, webhook_path: &str) -> bool {
    !webhook_path.is_empty() && path == webhook_path
}

/// The path policy of `enforce`: true when a web framework could route `path` to the handler
/// of `webhook_path`, so that in `enforce` mode every such request, whatever its method and
/// event header, must carry drone's signature (issue 20, finding 3). Generous on purpose: a
/// false positive costs an unsigned stranger a 401, a false negative is a bypass.
///
/// Both paths are read as frameworks read them ([`segments`]): the query and fragment cut
/// off, `%XX` decoded once, `\` taken as `/`, empty and `.` segments dropped, `..` removing
/// the segment before it, ASCII case ignored (Express, ASP.NET). Then each segment of
/// `webhook_path` must begin the request's segment at the same place, followed by nothing or
/// by a character that cannot continue a name (not an ASCII letter, digit, `-` or `_`): so
/// `/HOOK`, `/hook;jsessionid=1` (Spring drops `;` parameters), `/hook.json` (Rails' format
/// suffix), `/hook%20`, `/hook.` and anything below them (`/hook/x`) are covered, and `/hooks`,
/// `/hook-x`, `/other/hook` are not. `webhook_path` `/` covers every path. The shipped Envoy
/// route matches the same paths with [`webhook_route_regex`].
pub fn is_webhook_path(path: &str, webhook_path: &str) -> bool {
    if webhook_path.is_empty() {
        return false;
    }
    let want = segments(webhook_path);
    let got = segments(path);
    got.len() >= want.len()
        && want
            .iter()
            .zip(got.iter())
            .all(|(w, g)| segment_covers(w, g))
}

/// `got` begins with `want` (both lowercase), followed by nothing or by a byte that cannot
/// continue a name.
fn segment_covers(want: &[u8], got: &[u8]) -> bool {
    got.starts_with(want)
        && got
            .get(want.len())
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_'))
}

/// A path as a framework may read it, in lowercase segments (see [`is_webhook_path`]).
fn segments(path: &str) -> Vec<Vec<u8>> {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let raw = path.as_bytes();
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let hex = |at: usize| raw.get(at).and_then(|c| char::from(*c).to_digit(16));
        match (b, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                decoded.push(u8::try_from(hi * 16 + lo).unwrap_or(b'%'));
                i += 3;
            }
            _ => {
                decoded.push(b);
                i += 1;
            }
        }
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for seg in decoded.split(|c| *c == b'/' || *c == b'\\') {
        match seg {
            b"" | b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s.to_ascii_lowercase()),
        }
    }
    out
}

/// The `safe_regex` (RE2) of the Envoy route that turns the filter on: a superset of the paths
/// [`is_webhook_path`] covers, as Envoy hands them to route matching (after `normalize_path`,
/// `merge_slashes` and `path_with_escaped_slashes_action`, the query removed): ASCII case
/// ignored, each segment of `webhook_path` followed by anything up to the next `/`, anything
/// after the last. The route may hand the filter more than it checks (`/hooks`), never less;
/// the filter decides. Kept small: Envoy refuses an RE2 program over 100 by default.
pub fn webhook_route_regex(webhook_path: &str) -> String {
    let want = segments(webhook_path);
    let mut parts = Vec::with_capacity(want.len());
    for seg in &want {
        let mut part = String::new();
        for &b in seg {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                part.push(char::from(b));
            } else if b.is_ascii() {
                // As sent, or still percent-encoded (`normalize_path` decodes only
                // unreserved characters).
                part.push_str(&format!("(?:\\x{b:02x}|%{b:02x})"));
            } else {
                // Part of a UTF-8 character (RE2 matches characters, not bytes): anything
                // within the segment, so the route stays a superset of the filter's policy.
                part.push_str("[^/]*");
            }
        }
        parts.push(part);
    }
    format!("(?i)/{}.*", parts.join("[^/]*/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_webhook_path_is_a_build_webhook() {
        let hook = |method: &str, path: &str, ev: Option<&str>| {
            is_build_webhook(method, path, ev, "/hook")
        };
        assert!(hook("POST", "/hook", Some("build")));
        assert!(hook("POST", "/hook", Some(" Build ")));
        assert!(hook("POST", "/hook", Some("BUILD")));
        // Evidence of delivery is the exact path only: the same bytes elsewhere may reach
        // another handler, or none (issue 20, finding 4).
        for other in [
            "/hook/",
            "/hook/drone",
            "/hook/x",
            "/hook?x=1",
            "/HOOK",
            "/hook;jsessionid=1",
            "/hook.json",
            "/hooks",
            "/hoo",
            "/other/hook",
            "",
        ] {
            assert!(!hook("POST", other, Some("build")), "{other}");
        }
        assert!(!hook("post", "/hook", Some("build")));
        assert!(!hook("PUT", "/hook", Some("build")));
        assert!(!hook("GET", "/hook", Some("build")));
        assert!(!hook("POST", "/hook", None));
        assert!(!hook("POST", "/hook", Some("repo")));
        assert!(!hook("POST", "/hook", Some("user")));
        assert!(!hook("POST", "/hook", Some("")));
        assert!(!hook("POST", "/hook", Some("builds")));
        // A query in `webhook_path` (drone's endpoint carries one) is part of the exact path.
        assert!(is_delivery_path("/hook?t=1", "/hook?t=1"));
        assert!(!is_delivery_path("/hook", "/hook?t=1"));
        assert!(is_delivery_path("/hooks/", "/hooks/"));
        assert!(!is_delivery_path("/hooks", "/hooks/"));
        assert!(!is_build_webhook("POST", "/hook", Some("build"), ""));
    }

    /// Issue 20, finding 3: every spelling a framework could route to the webhook's handler
    /// is covered by `enforce`; names that merely begin alike are not.
    #[test]
    fn enforce_covers_every_spelling_a_framework_routes_to_the_webhook_path() {
        let covered = [
            "/hook",
            "/hook/",
            "/hook/x",
            "/hook?x=1",
            "/HOOK",
            "/Hook",
            "/hOoK/x",
            "/hook;jsessionid=1",
            "/hook;a=b/x",
            "/hook.json",
            "/hook.",
            "/hook%20",
            "/hook%09",
            "/hook%2520",
            "/hook ",
            "/hook~",
            "/hook%3Bx",
            "/%68ook",
            "/%48OOK",
            "//hook",
            "/./hook",
            "/x/../hook",
            "/%2e%2e/hook",
            "/x/%2E%2E/hook",
            "/%2Fhook",
            "/\\hook",
            "/../../hook",
            "/hook#frag",
        ];
        for p in covered {
            assert!(is_webhook_path(p, "/hook"), "{p} must be covered");
        }
        let not = [
            "/",
            "/hooks",
            "/hook-x",
            "/hook_x",
            "/hook2",
            "/hoo",
            "/other/hook",
            "/hook/../x",
            "/x?/hook",
            "",
            "/h%6Fo",
        ];
        for p in not {
            assert!(!is_webhook_path(p, "/hook"), "{p} must not be covered");
        }
        // Several segments: each is matched the same way.
        assert!(is_webhook_path("/Drone;x/HOOK.json", "/drone/hook"));
        assert!(is_webhook_path("/drone//hook/", "/drone/hook"));
        assert!(!is_webhook_path("/drone/hooks", "/drone/hook"));
        assert!(!is_webhook_path("/drone", "/drone/hook"));
        // A trailing slash in `webhook_path` does not narrow what frameworks route.
        assert!(is_webhook_path("/hooks", "/hooks/"));
        assert!(is_webhook_path("/hooks/drone", "/hooks/"));
        // `/` covers everything; a query in `webhook_path` is not part of the policy.
        assert!(is_webhook_path("/anything?x", "/"));
        assert!(is_webhook_path("/HOOK", "/hook?t=1"));
        assert!(!is_webhook_path("/hook", ""));
    }

    #[test]
    fn the_route_regex_is_built_from_the_same_segments() {
        assert_eq!(webhook_route_regex("/hook"), "(?i)/hook.*");
        assert_eq!(
            webhook_route_regex("/Drone//ci.v1/"),
            "(?i)/drone[^/]*/ci(?:\\x2e|%2e)v1.*"
        );
        assert_eq!(webhook_route_regex("/"), "(?i)/.*");
    }

    /// Letters, digits, `-` and `_` are the characters a name is made of: the route matches
    /// them as written (any case), so `/drone-ci/my_hook` routes its own spelling to the
    /// filter, and only its other characters are matched sent or percent-encoded.
    #[test]
    fn the_route_regex_keeps_dashes_and_underscores_as_written() {
        assert_eq!(
            webhook_route_regex("/drone-ci/my_hook"),
            "(?i)/drone-ci[^/]*/my_hook.*"
        );
    }
}
