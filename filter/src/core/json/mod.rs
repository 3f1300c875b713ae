//! JSON without a tree and without serde: the validating one-pass scanner ([`scan`]) the
//! webhook parser, the configuration and drone's answers are read with, and the decoders of
//! the values it hands over ([`decode`]), and the walks over text that need no parse
//! ([`text`]: compaction, nesting depth). The serde-based reference parser the scanner is
//! tested and fuzzed against is not here: it is a test oracle outside the filter
//! (`test_support::reference`), so the shipped module depends on neither serde nor serde_json.

pub(crate) mod decode;
pub(crate) mod scan;
pub(crate) mod text;

pub(crate) use decode::{decode_string, decode_u64};
/// For the tests, which hold serde_json to the same nesting limit.
#[cfg(test)]
pub(crate) use scan::MAX_DEPTH;
pub(crate) use scan::{le_words, JsonError, Scanner};
pub(crate) use text::compact;
#[cfg(test)]
pub(crate) use text::nesting_depth;

/// One to three random one-byte edits of `b` (replace, insert or delete, a byte of `alphabet`
/// at a random place): near-misses of a valid text, for the tests that hold the parsers to
/// serde_json's verdict.
#[cfg(test)]
pub(crate) fn mutate(rng: &mut crate::core::backoff::Rng, b: &mut Vec<u8>, alphabet: &[u8]) {
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
