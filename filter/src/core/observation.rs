//! The message a worker's HTTP filter sends to the reconciler through the shared queue.

use super::model::{DeliveryOutcome, ParseError, ParsedWebhook};
use serde::{Deserialize, Serialize};

/// One live webhook and how the pipeline answered it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub webhook: ParsedWebhook,
    pub outcome: DeliveryOutcome,
}

impl Observation {
    pub fn encode(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Decodes a queue message; garbage is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Observation, ParseError> {
        let _ = bytes;
        Err(ParseError::Missing("webhook"))
    }
}
