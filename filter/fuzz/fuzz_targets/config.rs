//! Plugin configuration parsing must never panic, on any bytes; every `*_env` variable exists.
#![no_main]

use libfuzzer_sys::fuzz_target;
use status_sync::core::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = Config::parse(data, &|_| Some("x".into())) {
        // The error message is built from the input; formatting it must not panic either.
        let _ = e.to_string();
    }
});
