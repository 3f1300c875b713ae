//! `STATUS_SYNC_VERSION`, when set at build time, replaces the package version the module
//! reports (its start-up log line and the User-Agent of its calls to drone). Releases never
//! set it; the end-to-end upgrade test (envoy/tests/ecds.rs) uses it to build a second module
//! that differs from the first in its version string only. Unset, it changes nothing, so
//! `make dist` stays reproducible.
fn main() {
    println!("cargo:rerun-if-env-changed=STATUS_SYNC_VERSION");
    if let Ok(v) = std::env::var("STATUS_SYNC_VERSION") {
        if !v.is_empty() {
            println!("cargo:rustc-env=CARGO_PKG_VERSION={v}");
        }
    }
}
