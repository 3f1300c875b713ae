//! The message a worker's HTTP filter sends to the reconciler through the shared queue.

use super::model::{BuildStatus, DeliveryOutcome, ParseError, ParsedWebhook, RepoRef};
use super::wire::{put_str32, put_u64, put_u8, Reader};

/// Magic and version of the queue message. A reconciler refuses (and counts) messages of a
/// version it does not know, e.g. from a newer worker during a rolling code change.
const MAGIC: &[u8; 4] = b"SSO1";

/// One live webhook and how the pipeline answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub webhook: ParsedWebhook,
    pub outcome: DeliveryOutcome,
}

fn outcome_code(o: DeliveryOutcome) -> u8 {
    match o {
        DeliveryOutcome::Delivered => 0,
        DeliveryOutcome::Refused => 1,
        DeliveryOutcome::NotDelivered => 2,
    }
}

fn put_opt(out: &mut Vec<u8>, s: &Option<String>) {
    match s {
        Some(s) => {
            put_u8(out, 1);
            put_str32(out, s);
        }
        None => put_u8(out, 0),
    }
}

fn opt(r: &mut Reader<'_>) -> Option<Option<String>> {
    match r.u8()? {
        0 => Some(None),
        1 => Some(Some(r.str32()?)),
        _ => None,
    }
}

impl Observation {
    /// Encodes for `enqueue_shared_queue`: a compact binary message (see [`super::wire`]),
    /// cheap to write on the request path and small in the queue.
    pub fn encode(&self) -> Vec<u8> {
        let w = &self.webhook;
        let mut out = Vec::with_capacity(64 + w.repo_json.as_ref().map_or(0, String::len));
        out.extend_from_slice(MAGIC);
        put_u64(&mut out, w.repo.id);
        put_u64(&mut out, w.number);
        put_u64(&mut out, w.version);
        put_u8(&mut out, w.status.code());
        put_u8(&mut out, outcome_code(self.outcome));
        put_str32(&mut out, &w.repo.namespace);
        put_str32(&mut out, &w.repo.name);
        put_str32(&mut out, &w.action);
        put_opt(&mut out, &w.repo_json);
        put_opt(&mut out, &w.system_json);
        out
    }

    /// Decodes a queue message; garbage is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Observation, ParseError> {
        Self::read(bytes).ok_or(ParseError::Invalid("queue message"))?
    }

    fn read(bytes: &[u8]) -> Option<Result<Observation, ParseError>> {
        let mut r = Reader::new(bytes);
        if r.take(4)? != MAGIC {
            return None;
        }
        let id = r.u64()?;
        let number = r.u64()?;
        let version = r.u64()?;
        let status_code = r.u8()?;
        if status_code > BuildStatus::Unknown.code() {
            return None;
        }
        let outcome = match r.u8()? {
            0 => DeliveryOutcome::Delivered,
            1 => DeliveryOutcome::Refused,
            2 => DeliveryOutcome::NotDelivered,
            _ => return None,
        };
        let namespace = r.str32()?;
        let name = r.str32()?;
        let action = r.str32()?;
        let repo_json = opt(&mut r)?;
        let system_json = opt(&mut r)?;
        if !r.is_empty() {
            return None;
        }
        // Hold queue messages to the same rule as webhooks: an empty name cannot address
        // drone's API.
        if namespace.is_empty() {
            return Some(Err(ParseError::Invalid("repo.namespace")));
        }
        if name.is_empty() {
            return Some(Err(ParseError::Invalid("repo.name")));
        }
        Some(Ok(Observation {
            webhook: ParsedWebhook {
                repo: RepoRef {
                    id,
                    namespace,
                    name,
                },
                number,
                status: BuildStatus::from_code(status_code),
                version,
                action,
                repo_json,
                system_json,
            },
            outcome,
        }))
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
            let body = drone_model::fixtures::bytes(name);
            let o = Observation {
                webhook: parse_webhook(body).unwrap(),
                outcome: DeliveryOutcome::Delivered,
            };
            assert_eq!(Observation::decode(&o.encode()).unwrap(), o);
        }
    }

    #[test]
    fn optional_fields_may_be_absent() {
        let mut o = sample();
        o.webhook.repo_json = None;
        o.webhook.system_json = None;
        assert_eq!(Observation::decode(&o.encode()).unwrap(), o);
    }

    #[test]
    fn garbage_is_an_error() {
        let good = sample().encode();
        let empty_ns = {
            let mut o = sample();
            o.webhook.repo.namespace.clear();
            o.encode()
        };
        let empty_name = {
            let mut o = sample();
            o.webhook.repo.name.clear();
            o.encode()
        };
        let mut wrong_magic = good.clone();
        wrong_magic[3] = b'9';
        let mut bad_status = good.clone();
        bad_status[28] = 200;
        let mut bad_outcome = good.clone();
        bad_outcome[29] = 3;
        let mut trailing = good.clone();
        trailing.push(0);
        let mut bad: Vec<Vec<u8>> = vec![
            vec![],
            b"null".to_vec(),
            b"{}".to_vec(),
            vec![0xff, 0x00, 0x13],
            empty_ns,
            empty_name,
            wrong_magic,
            bad_status,
            bad_outcome,
            trailing,
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
