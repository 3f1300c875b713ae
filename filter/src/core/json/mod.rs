//! JSON without a tree and without serde: the validating one-pass scanner ([`scan`]) the
//! webhook parser, the configuration and drone's answers are read with, and the decoders of
//! the values it hands over ([`decode`]). The serde-based reference parser the scanner is
//! tested and fuzzed against is not here: it is a test oracle (`webhook::reference`, behind the
//! `reference` feature), so the shipped module depends on neither serde nor serde_json.

pub(crate) mod decode;
pub(crate) mod scan;

pub(crate) use decode::{decode_string, decode_u64};
/// For the reference parser and the tests, which hold other decoders to the same nesting limit.
#[cfg(any(test, feature = "reference"))]
pub(crate) use scan::MAX_DEPTH;
pub(crate) use scan::{le_words, JsonError, Scanner};
