//! Queue messages must decode without panicking, a decoded message must survive
//! `encode` -> `decode` unchanged, and its `repo` and `system` JSON must make a re-delivery
//! body (never the empty one).
#![no_main]

use libfuzzer_sys::fuzz_target;
use status_sync::core::drone_api::try_redelivery_body;
use status_sync::core::observation::Observation;

fuzz_target!(|data: &[u8]| {
    if let Ok(obs) = Observation::decode(data) {
        let w = &obs.webhook;
        let repo = w.repo_json.as_deref().unwrap_or("{}");
        if let Err(e) = try_redelivery_body(repo, r#"{"number":1}"#, w.system_json.as_deref()) {
            panic!("decoded metadata makes no re-delivery body ({e}): {w:?}");
        }
        let again = Observation::decode(&obs.encode());
        assert_eq!(
            again.as_ref(),
            Ok(&obs),
            "encode/decode round trip changed the message"
        );
    }
});
