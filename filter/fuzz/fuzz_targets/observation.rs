//! Queue messages must decode without panicking, and a decoded message must survive
//! `encode` -> `decode` unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use status_sync::core::observation::Observation;

fuzz_target!(|data: &[u8]| {
    if let Ok(obs) = Observation::decode(data) {
        let again = Observation::decode(&obs.encode());
        assert_eq!(
            again.as_ref(),
            Ok(&obs),
            "encode/decode round trip changed the message"
        );
    }
});
