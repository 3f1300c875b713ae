//! Queue messages must decode without panicking, a decoded message must survive
//! `encode` -> `decode` unchanged (tagged with the same key when it was evidence), and its
//! `repo` and `system` JSON must make a re-delivery body (never the empty one). The key is
//! the one `make-seeds.py` tags the seeds with.
#![no_main]

use libfuzzer_sys::fuzz_target;
use status_sync::core::drone_api::try_redelivery_body;
use status_sync::core::observation::{Observation, QueueKey};

fuzz_target!(|data: &[u8]| {
    let key = QueueKey::derive(b"fuzz-webhook-secret");
    if let Ok(obs) = Observation::decode(data, Some(&key)) {
        let w = obs.webhook();
        let repo = w.repo_json.as_deref().unwrap_or("{}");
        if let Err(e) = try_redelivery_body(repo, r#"{"number":1}"#, w.system_json.as_deref()) {
            panic!("decoded metadata makes no re-delivery body ({e}): {w:?}");
        }
        let again = Observation::decode(&obs.encode(Some(&key)), Some(&key));
        assert_eq!(
            again.as_ref(),
            Ok(&obs),
            "encode/decode round trip changed the message"
        );
    }
});
