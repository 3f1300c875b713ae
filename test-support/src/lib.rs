//! Test oracles for status-sync, outside the filter so the shipped module depends on neither
//! serde nor serde_json (`cargo tree -p status-sync --target wasm32-unknown-unknown -e normal`):
//! - [`reference`]: the serde-based webhook parser that the one-pass parser
//!   (`status_sync::core::webhook::parse_webhook`) is tested (`filter/tests/webhook.rs`) and
//!   fuzzed (`filter/fuzz/fuzz_targets/webhook.rs`) against;
//! - [`mutate`]: near-misses of a valid text, the inputs those comparisons are run on.

pub mod reference;

/// One to three random one-byte edits of `b` (replace, insert or delete, a byte of `alphabet`
/// at a random place): near-misses of a valid text, for the tests that hold the parsers to
/// serde_json's verdict. `b` must not be empty.
pub fn mutate(rng: &mut status_sync::core::backoff::Rng, b: &mut Vec<u8>, alphabet: &[u8]) {
    for _ in 0..1 + rng.next_u64() % 3 {
        let i = (rng.next_u64() % b.len() as u64) as usize;
        let v = alphabet[(rng.next_u64() % alphabet.len() as u64) as usize];
        match rng.next_u64() % 3 {
            0 => b[i] = v,
            1 => b.insert(i, v),
            _ => {
                b.remove(i);
            }
        }
    }
}
