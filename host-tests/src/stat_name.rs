//! Stat names as Envoy's tag extraction leaves them. One file for both harnesses: the
//! wasmtime host (host-tests) and the real-Envoy tests (`envoy/src/envoy.rs` includes it by
//! `#[path]`), so both read status-sync's tagged names the same way.

/// A stat name without its `<tag>=.=<value>;.;` parts (Istio's tag encoding, which status-sync
/// uses for `sync_instance`), as Envoy's tag extraction leaves it.
pub fn untagged(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(eq) = rest.find("=.=") {
        let Some(end) = rest[eq..].find(";.;") else {
            break;
        };
        // The tag name starts after the last '.' (or ';') before "=.=".
        let start = rest[..eq].rfind(['.', ';']).map_or(0, |i| i + 1);
        out.push_str(&rest[..start]);
        rest = &rest[eq + end + 3..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::untagged;

    #[test]
    fn untagged_removes_every_tag_and_keeps_the_name() {
        let n = "status_sync.sync_version=.=0.1.0;.;sync_instance=.=ci.prod;.;build_info";
        assert_eq!(untagged(n), "status_sync.build_info");
        assert_eq!(untagged("status_sync.giveups"), "status_sync.giveups");
        assert_eq!(untagged("a.b=.=unterminated"), "a.b=.=unterminated");
    }
}
