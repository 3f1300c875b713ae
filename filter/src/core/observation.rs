//! The message a worker's HTTP filter sends to the reconciler through the shared queue.

use super::limits;
use super::model::{BuildStatus, DeliveryOutcome, ParseError, ParsedWebhook, RepoRef};
use super::wire::{put_str32, put_u64, put_u8, Magic, Reader};

/// Magic and version of the queue message. A reconciler refuses (and counts) messages of a
/// version it does not know, e.g. from a newer worker during a rolling code change.
/// `SSO2` added the `verified` byte after the outcome byte. `SSO1` is still decoded (as
/// unverified) so that a rolling upgrade, where an old worker feeds a new reconciler, loses
/// nothing and grants nothing.
const MAGIC: Magic = Magic {
    current: *b"SSO2",
    previous: *b"SSO1",
};

/// One live webhook and how the pipeline answered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub webhook: ParsedWebhook,
    pub outcome: DeliveryOutcome,
    /// The webhook's drone signature verified (`Signature` HMAC, `Date` within
    /// `max_clock_skew_ms` and `Digest` matching the body). Only possible when a secret is
    /// configured and `signature_mode` is `monitor` or `enforce`; false otherwise. A verified
    /// webhook is evidence; any other is a hint.
    pub verified: bool,
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
        out.extend_from_slice(&MAGIC.current);
        put_u64(&mut out, w.repo.id);
        put_u64(&mut out, w.number);
        put_u64(&mut out, w.version);
        put_u8(&mut out, w.status.code());
        put_u8(&mut out, outcome_code(self.outcome));
        put_u8(&mut out, u8::from(self.verified));
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
        let v2 = r.magic(&MAGIC)?;
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
        let verified = if v2 {
            match r.u8()? {
                0 => false,
                1 => true,
                _ => return None,
            }
        } else {
            false
        };
        let namespace = r.str32()?;
        let name = r.str32()?;
        let action = r.str32()?;
        let repo_json = opt(&mut r)?;
        let system_json = opt(&mut r)?;
        if !r.is_empty() {
            return None;
        }
        let webhook = ParsedWebhook {
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
        };
        // Any VM of the process can write to the queue: hold its messages to the webhook
        // parser's limits.
        if let Err(e) = limits::check_webhook(&webhook) {
            return Some(Err(e));
        }
        Some(Ok(Observation {
            webhook,
            outcome,
            verified,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{BuildStatus, RepoRef};
    use crate::core::webhook::parse_webhook;

    /// The fuzz seeds (`filter/fuzz/make-seeds.py`) are real queue messages: each decodes, and
    /// the `SSO2` ones encode back to the same bytes. A change of layout that forgets the
    /// script fails here.
    #[test]
    fn fuzz_seeds_are_valid_queue_messages() {
        let seeds: [(&str, &[u8]); 5] = [
            (
                "delivered",
                include_bytes!("../../fuzz/seeds/observation/delivered.bin"),
            ),
            (
                "refused",
                include_bytes!("../../fuzz/seeds/observation/refused.bin"),
            ),
            (
                "not_delivered",
                include_bytes!("../../fuzz/seeds/observation/not_delivered.bin"),
            ),
            (
                "minimal",
                include_bytes!("../../fuzz/seeds/observation/minimal.bin"),
            ),
            ("v1", include_bytes!("../../fuzz/seeds/observation/v1.bin")),
        ];
        for (name, bytes) in seeds {
            let obs = Observation::decode(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            if name == "v1" {
                assert!(!obs.verified);
            } else {
                assert_eq!(obs.encode(), bytes, "{name}");
            }
        }
        let delivered = Observation::decode(seeds[0].1).unwrap();
        assert!(delivered.verified);
        assert_eq!(delivered.outcome, DeliveryOutcome::Delivered);
        assert!(delivered.webhook.repo_json.is_some());
    }

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
                version: i64::MAX as u64,
                action: "updated".to_string(),
                repo_json: Some(r#"{"id":42,"x":"\u00e9"}"#.to_string()),
                system_json: None,
            },
            outcome: DeliveryOutcome::NotDelivered,
            verified: true,
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
                verified: false,
            };
            assert_eq!(Observation::decode(&o.encode()).unwrap(), o);
        }
    }

    #[test]
    fn verified_round_trips() {
        for verified in [false, true] {
            let mut o = sample();
            o.verified = verified;
            assert_eq!(Observation::decode(&o.encode()).unwrap(), o);
        }
    }

    /// A worker still running the previous version (rolling upgrade) sends `SSO1` messages:
    /// they decode, and as unverified (hints), whatever the old worker checked.
    #[test]
    fn previous_version_decodes_as_unverified() {
        let o = sample();
        let v2 = o.encode();
        let mut v1 = b"SSO1".to_vec();
        v1.extend_from_slice(&v2[4..30]);
        v1.extend_from_slice(&v2[31..]);
        let decoded = Observation::decode(&v1).unwrap();
        assert!(!decoded.verified);
        assert_eq!(decoded.webhook, o.webhook);
        assert_eq!(decoded.outcome, o.outcome);
    }

    /// The queue is input too: a message outside the webhook parser's limits is refused.
    #[test]
    fn limits_hold_at_the_decoder() {
        use crate::core::limits::{MAX_NAME_CHARS, MAX_REPO_JSON_BYTES, MAX_SYSTEM_JSON_BYTES};
        type Edit = Box<dyn Fn(&mut ParsedWebhook)>;
        let edits: Vec<Edit> = vec![
            Box::new(|w| w.repo.id = 0),
            Box::new(|w| w.repo.id = 1 << 63),
            Box::new(|w| w.number = 0),
            Box::new(|w| w.number = u64::MAX),
            Box::new(|w| w.version = 1 << 63),
            Box::new(|w| w.repo.namespace = "..".into()),
            Box::new(|w| w.repo.name = ".".into()),
            Box::new(|w| w.repo.name = "a/b".into()),
            Box::new(|w| w.repo.name = "a\u{1b}[31m".into()),
            Box::new(|w| w.repo.namespace = "x".repeat(MAX_NAME_CHARS + 1)),
            Box::new(|w| w.action = "deleted".into()),
            Box::new(|w| w.repo_json = Some("x".repeat(MAX_REPO_JSON_BYTES + 1))),
            Box::new(|w| w.system_json = Some("x".repeat(MAX_SYSTEM_JSON_BYTES + 1))),
        ];
        // Not the parser's shapes: `repo` and `system` are JSON objects whose keys decode
        // (else a re-delivery would have no body).
        let mut edits = edits;
        for bad in [
            "",
            "null",
            "[]",
            "\"s\"",
            "{",
            "{}{}",
            "{\"a\":}",
            r#"{"\ud800":1}"#,
        ] {
            edits.push(Box::new(move |w| w.repo_json = Some(bad.into())));
            edits.push(Box::new(move |w| w.system_json = Some(bad.into())));
        }
        for (i, edit) in edits.iter().enumerate() {
            let mut o = sample();
            edit(&mut o.webhook);
            assert!(Observation::decode(&o.encode()).is_err(), "edit {i}");
        }
    }

    /// Whatever the decoder accepts makes a re-delivery body: its `repo` and `system` are
    /// what `try_redelivery_body` splices in.
    #[test]
    fn decoded_metadata_makes_a_redelivery_body() {
        use crate::core::drone_api::try_redelivery_body;
        let build = drone_model::fixtures::text("api-build-success.json");
        let mut messages = vec![sample()];
        for name in [
            "webhook-build-created.json",
            "webhook-build-updated-running.json",
            "webhook-build-updated-success.json",
        ] {
            messages.push(Observation {
                webhook: parse_webhook(drone_model::fixtures::bytes(name)).unwrap(),
                outcome: DeliveryOutcome::Delivered,
                verified: true,
            });
        }
        let mut odd = sample();
        odd.webhook.repo_json = Some(" {\"a\" : [1, {}], \"\\u00e9\":null}\n".into());
        odd.webhook.system_json = Some("{}".into());
        messages.push(odd);
        for o in messages {
            let w = Observation::decode(&o.encode()).unwrap().webhook;
            let repo = w.repo_json.as_deref().unwrap_or("{}");
            let body = try_redelivery_body(repo, build.trim(), w.system_json.as_deref());
            assert!(body.is_ok_and(|b| !b.is_empty()), "{w:?}");
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
        let mut bad_verified = good.clone();
        bad_verified[30] = 2;
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
            bad_verified,
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
