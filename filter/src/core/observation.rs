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
    /// Encodes for `enqueue_shared_queue`. JSON keeps the message readable in logs and lets a
    /// reconciler of a newer plugin version decode an older worker's messages (optional
    /// fields default). Serializing these plain structs cannot fail; were it ever to, the
    /// empty message is refused by [`Observation::decode`] and counted there, not lost
    /// silently in a panic.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a queue message; garbage is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Observation, ParseError> {
        let obs: Observation =
            serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))?;
        // Hold queue messages to the same rule as webhooks: an empty name cannot address
        // drone's API.
        if obs.webhook.repo.namespace.is_empty() {
            return Err(ParseError::Invalid("repo.namespace"));
        }
        if obs.webhook.repo.name.is_empty() {
            return Err(ParseError::Invalid("repo.name"));
        }
        Ok(obs)
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::expect_used,
    clippy::panic
)]
mod tests {
    use super::*;
    use crate::core::model::{BuildStatus, RepoRef};
    use crate::core::webhook::parse_webhook;

    fn sample() -> Observation {
        Observation {
            webhook: ParsedWebhook {
                repo: RepoRef {
                    id: 42,
                    namespace: "octocat".to_string(),
                    name: "hello \"world\" é".to_string(),
                },
                number: 101,
                status: BuildStatus::WaitingOnDependencies,
                version: u64::MAX,
                action: "updated".to_string(),
                repo_json: Some(r#"{"id":42,"x":"\u00e9"}"#.to_string()),
                system_json: None,
            },
            outcome: DeliveryOutcome::NotDelivered,
        }
    }

    #[test]
    fn round_trips() {
        let o = sample();
        assert_eq!(Observation::decode(&o.encode()).unwrap(), o);
        for outcome in [
            DeliveryOutcome::Delivered,
            DeliveryOutcome::Refused,
            DeliveryOutcome::NotDelivered,
        ] {
            let mut o = sample();
            o.outcome = outcome;
            o.webhook.system_json = Some("{}".to_string());
            assert_eq!(Observation::decode(&o.encode()).unwrap(), o);
        }
    }

    #[test]
    fn round_trips_every_fixture() {
        for name in [
            "webhook-build-created.json",
            "webhook-build-updated-running.json",
            "webhook-build-updated-success.json",
        ] {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/drone/")
                .to_string()
                + name;
            let body = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("drone fixture `{path}` is missing ({e}); the tests need the shared fixtures directory")
            });
            let o = Observation {
                webhook: parse_webhook(&body).unwrap(),
                outcome: DeliveryOutcome::Delivered,
            };
            assert_eq!(Observation::decode(&o.encode()).unwrap(), o);
        }
    }

    #[test]
    fn optional_fields_may_be_absent() {
        let msg = br#"{"webhook":{"repo":{"id":1,"namespace":"o","name":"n"},"number":2,"status":"running","version":3,"action":"created"},"outcome":"refused"}"#;
        let o = Observation::decode(msg).unwrap();
        assert_eq!(o.webhook.repo_json, None);
        assert_eq!(o.webhook.system_json, None);
        assert_eq!(o.outcome, DeliveryOutcome::Refused);
    }

    #[test]
    fn garbage_is_an_error() {
        let good = sample().encode();
        let mut bad: Vec<Vec<u8>> = vec![
            vec![],
            b"null".to_vec(),
            b"{}".to_vec(),
            b"[]".to_vec(),
            vec![0xff, 0x00, 0x13],
            br#"{"webhook":{"repo":{"id":1,"namespace":"o","name":"n"},"number":2,"status":"bogus","version":3,"action":"created"},"outcome":"refused"}"#.to_vec(),
            br#"{"webhook":{"repo":{"id":1,"namespace":"o","name":"n"},"number":2,"status":"running","version":3,"action":"created"},"outcome":"lost"}"#.to_vec(),
            br#"{"webhook":{"repo":{"id":-1,"namespace":"o","name":"n"},"number":2,"status":"running","version":3,"action":"created"},"outcome":"refused"}"#.to_vec(),
            br#"{"webhook":{"repo":{"id":1,"namespace":"","name":"n"},"number":2,"status":"running","version":3,"action":"created"},"outcome":"refused"}"#.to_vec(),
            br#"{"webhook":{"repo":{"id":1,"namespace":"o","name":""},"number":2,"status":"running","version":3,"action":"created"},"outcome":"refused"}"#.to_vec(),
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
        ];
        for cut in 0..good.len() - 1 {
            bad.push(good[..cut].to_vec());
        }
        for b in &bad {
            assert!(
                Observation::decode(b).is_err(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }
}
