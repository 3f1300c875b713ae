//! The message a worker's HTTP filter sends to the reconciler through the shared queue.
//!
//! Any wasm VM of the same Envoy can enqueue on `status-sync/<root>/observations` (the host
//! checks nothing), so the queue is untrusted input twice: its bytes are held to the webhook
//! parser's limits, and its `verified` byte is believed only with a tag only a worker of this
//! plugin can make: HMAC-SHA256 over the message, under a [`QueueKey`] derived from the
//! configured webhook secret. A message claiming `verified` without a tag that verifies is a
//! hint ([`Vouch::Unauthenticated`], counted by the reconciler).

use super::config::Config;
use super::limits;
use super::model::{BuildStatus, DeliveryOutcome, ParseError, ParsedWebhook, RepoRef};
use super::redact::Redacted;
use super::signature::{hmac_sha256, hmac_sha256_verify};
use super::wire::{put_str32, put_u64, put_u8, Reader};

/// Magic and version of the queue message. A reconciler refuses (and counts) messages of a
/// version it does not know, e.g. from a newer worker during a rolling code change.
/// `SSO3` added the tag after a `verified` message. `SSO2` added the `verified` byte after
/// the outcome byte; `SSO2` and `SSO1` are still decoded, as unverified (hints), so that a
/// rolling upgrade, where an old worker feeds a new reconciler, loses no hint and grants no
/// evidence (a message without a tag is what any other plugin can write).
const MAGIC: [u8; 4] = *b"SSO3";
const MAGIC_V2: [u8; 4] = *b"SSO2";
const MAGIC_V1: [u8; 4] = *b"SSO1";

/// Length of a verified message's tag.
const TAG_BYTES: usize = 32;

/// What the key of the tags is derived from, besides the webhook secret: a label no drone
/// signing string can be (those start `date: `), so a tag is never a valid webhook signature
/// nor the other way round.
const KEY_LABEL: &[u8] = b"status-sync observation queue tag v1";

/// The key of the queue's tags: HMAC-SHA256(webhook secret, [`KEY_LABEL`]). Every worker and
/// the reconciler of one configuration derive the same; a plugin without the webhook secret
/// cannot. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct QueueKey([u8; 32]);

impl std::fmt::Debug for QueueKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("QueueKey").field(&Redacted(())).finish()
    }
}

impl QueueKey {
    /// The key for `webhook_secret`.
    pub fn derive(webhook_secret: &[u8]) -> QueueKey {
        QueueKey(hmac_sha256(webhook_secret, &[KEY_LABEL]))
    }

    /// The key of a configuration: `None` without a webhook secret (nothing is ever
    /// verified then, so no message is evidence).
    pub fn of(cfg: &Config) -> Option<QueueKey> {
        cfg.webhook_secret
            .as_ref()
            .map(|s| QueueKey::derive(s.as_bytes()))
    }
}

/// What a decoded message's `verified` byte turned out to be worth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vouch {
    /// Not claimed: a hint.
    Hint,
    /// Claimed, and its tag verified under our key: evidence.
    Evidence,
    /// Claimed without a tag that verifies (another plugin, another webhook secret, or a
    /// worker of a version before `SSO3`): taken as a hint, and counted.
    Unauthenticated,
}

/// One live webhook and how the pipeline answered it.
///
/// Its fields are private: a message is evidence ([`Observation::verified`], sorted into a
/// [`super::proof::Evidence`] by [`super::proof::Seen::sort`]) only when [`Observation::decode`]
/// checked its tag under the queue key, and nothing can swap another webhook into it after.
/// Any other code makes only a hint ([`Observation::hint`]), so no module can turn a hint's
/// data into evidence (the compiler refuses):
///
/// ```compile_fail,E0451
/// use status_sync::core::model::DeliveryOutcome;
/// use status_sync::core::observation::Observation;
/// use status_sync::core::proof::{Evidence, Seen};
///
/// fn evidence_from_a_hint(hint: Observation) -> Option<Evidence> {
///     // error[E0451]: field `webhook` of struct `Observation` is private
///     let forged = Observation {
///         webhook: hint.webhook().clone(),
///         outcome: DeliveryOutcome::Delivered,
///         verified: true,
///     };
///     match Seen::sort(forged) {
///         Seen::Evidence(e) => Some(e),
///         Seen::Hint(_) => None,
///     }
/// }
/// ```
///
/// nor put a hint's webhook into a verified message:
///
/// ```compile_fail,E0616
/// use status_sync::core::model::ParsedWebhook;
/// use status_sync::core::observation::Observation;
///
/// fn swap(mut verified: Observation, hint: ParsedWebhook) -> Observation {
///     // error[E0616]: field `webhook` of struct `Observation` is private
///     verified.webhook = hint;
///     verified
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    webhook: ParsedWebhook,
    outcome: DeliveryOutcome,
    /// The webhook's drone signature verified (`Signature` HMAC, `Date` within
    /// `max_clock_skew_ms` and `Digest` matching the body) in a worker, and its message's tag
    /// verified here. Only possible when a secret is configured and `signature_mode` is
    /// `monitor` or `enforce`; false otherwise. A verified webhook is evidence; any other is a
    /// hint.
    verified: bool,
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
    /// A webhook nobody vouches for (making a hint is always safe).
    pub fn hint(webhook: ParsedWebhook, outcome: DeliveryOutcome) -> Self {
        Observation {
            webhook,
            outcome,
            verified: false,
        }
    }

    pub fn webhook(&self) -> &ParsedWebhook {
        &self.webhook
    }

    pub fn outcome(&self) -> DeliveryOutcome {
        self.outcome
    }

    /// Evidence: its message's tag verified under the queue key (see [`Observation::decode`]).
    pub fn verified(&self) -> bool {
        self.verified
    }

    pub fn into_webhook(self) -> ParsedWebhook {
        self.webhook
    }

    /// The same observation without drone's repository object (and, with `system`, without
    /// its system object too): what a cluster record carries. Only removes data, so it keeps
    /// the observation's standing.
    pub fn without_objects(&self, system: bool) -> Observation {
        let mut slim = self.clone();
        slim.webhook.repo_json = None;
        if system {
            slim.webhook.system_json = None;
        }
        slim
    }

    /// Encodes for `enqueue_shared_queue`; see [`Observation::message`]. A verified
    /// observation is tagged with `key`; without a key it goes as a hint (it could not be
    /// believed).
    pub fn encode(&self, key: Option<&QueueKey>) -> Vec<u8> {
        Self::message(&self.webhook, self.outcome, key.filter(|_| self.verified))
    }

    /// A worker's queue message for `webhook`: a compact binary message (see [`super::wire`]),
    /// cheap to write on the request path and small in the queue. `tag` is the key of a
    /// webhook whose drone signature verified: the message claims `verified` and carries the
    /// tag that makes the reconciler believe it. Without one it is a hint.
    pub fn message(w: &ParsedWebhook, outcome: DeliveryOutcome, tag: Option<&QueueKey>) -> Vec<u8> {
        let verified = tag.is_some();
        let mut out = Vec::with_capacity(
            64 + TAG_BYTES
                + w.repo_json.as_ref().map_or(0, String::len)
                + w.system_json.as_ref().map_or(0, String::len),
        );
        out.extend_from_slice(&MAGIC);
        put_u64(&mut out, w.repo.id);
        put_u64(&mut out, w.number);
        put_u64(&mut out, w.version);
        put_u8(&mut out, w.status.code());
        put_u8(&mut out, outcome_code(outcome));
        put_u8(&mut out, u8::from(verified));
        put_str32(&mut out, &w.repo.namespace);
        put_str32(&mut out, &w.repo.name);
        put_str32(&mut out, &w.action);
        put_opt(&mut out, &w.repo_json);
        put_opt(&mut out, &w.system_json);
        if let Some(key) = tag {
            let tag = hmac_sha256(&key.0, &[&out]);
            out.extend_from_slice(&tag);
        }
        out
    }

    /// An observation as the tests need it, evidence or not, its webhook writable: only with
    /// the `testing` feature (the crate's own tests and the benchmarks turn it on), never in
    /// the shipped module, whose code cannot call it.
    #[cfg(any(test, feature = "testing"))]
    pub fn for_tests(webhook: ParsedWebhook, outcome: DeliveryOutcome, verified: bool) -> Self {
        Observation {
            webhook,
            outcome,
            verified,
        }
    }

    /// See [`Observation::for_tests`].
    #[cfg(any(test, feature = "testing"))]
    pub fn webhook_mut(&mut self) -> &mut ParsedWebhook {
        &mut self.webhook
    }

    /// See [`Observation::for_tests`].
    #[cfg(any(test, feature = "testing"))]
    pub fn set_verified(&mut self, verified: bool) {
        self.verified = verified;
    }

    /// Decodes a queue message; garbage is an error, never a panic. `verified` is true only
    /// for [`Vouch::Evidence`] under `key` (see [`Observation::decode_vouched`]).
    pub fn decode(bytes: &[u8], key: Option<&QueueKey>) -> Result<Observation, ParseError> {
        Self::decode_vouched(bytes, key).map(|(obs, _)| obs)
    }

    /// Decodes a queue message, and says what its `verified` byte was worth: a message is
    /// evidence only when it carries a tag made with `key`.
    pub fn decode_vouched(
        bytes: &[u8],
        key: Option<&QueueKey>,
    ) -> Result<(Observation, Vouch), ParseError> {
        Self::read(bytes, key).ok_or(ParseError::Invalid("queue message"))?
    }

    fn read(
        bytes: &[u8],
        key: Option<&QueueKey>,
    ) -> Option<Result<(Observation, Vouch), ParseError>> {
        let mut r = Reader::new(bytes);
        let layout = match r.take(4)? {
            m if m == MAGIC => 3,
            m if m == MAGIC_V2 => 2,
            m if m == MAGIC_V1 => 1,
            _ => return None,
        };
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
        let claimed = if layout >= 2 {
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
        let vouch = if !claimed {
            Vouch::Hint
        } else if layout < 3 {
            Vouch::Unauthenticated
        } else {
            let signed = bytes.get(..bytes.len().checked_sub(r.remaining())?)?;
            let tag = r.take(TAG_BYTES)?;
            match key {
                Some(key) if hmac_sha256_verify(&key.0, signed, tag) => Vouch::Evidence,
                _ => Vouch::Unauthenticated,
            }
        };
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
        let obs = Observation {
            webhook,
            outcome,
            verified: vouch == Vouch::Evidence,
        };
        Some(Ok((obs, vouch)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{BuildStatus, RepoRef};
    use crate::core::webhook::parse_webhook;

    /// The key of the fuzz seeds and the fuzz target (`filter/fuzz/make-seeds.py`).
    const FUZZ_SECRET: &[u8] = b"fuzz-webhook-secret";

    fn key() -> QueueKey {
        QueueKey::derive(FUZZ_SECRET)
    }

    /// The fuzz seeds (`filter/fuzz/make-seeds.py`) are real queue messages: each decodes, and
    /// the `SSO3` ones encode back to the same bytes (the script makes the same tags). A
    /// change of layout that forgets the script fails here.
    #[test]
    fn fuzz_seeds_are_valid_queue_messages() {
        let seeds: [(&str, &[u8]); 6] = [
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
            ("v2", include_bytes!("../../fuzz/seeds/observation/v2.bin")),
        ];
        for (name, bytes) in seeds {
            let obs =
                Observation::decode(bytes, Some(&key())).unwrap_or_else(|e| panic!("{name}: {e}"));
            if name.starts_with('v') {
                assert!(!obs.verified);
            } else {
                assert_eq!(obs.encode(Some(&key())), bytes, "{name}");
            }
        }
        let delivered = Observation::decode(seeds[0].1, Some(&key())).unwrap();
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
        assert_eq!(
            Observation::decode(&o.encode(Some(&key())), Some(&key())).unwrap(),
            o
        );
        for outcome in [
            DeliveryOutcome::Delivered,
            DeliveryOutcome::Refused,
            DeliveryOutcome::NotDelivered,
        ] {
            let mut o = sample();
            o.outcome = outcome;
            o.webhook.system_json = Some("{}".to_string());
            assert_eq!(
                Observation::decode(&o.encode(Some(&key())), Some(&key())).unwrap(),
                o
            );
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
            assert_eq!(
                Observation::decode(&o.encode(Some(&key())), Some(&key())).unwrap(),
                o
            );
        }
    }

    #[test]
    fn verified_round_trips() {
        assert_eq!(
            QueueKey::of(&crate::core::config::Config::parse(
                br#"{"pipeline_cluster":"p","drone_cluster":"d","drone_token":"t","webhook_secret":"fuzz-webhook-secret"}"#,
                &|_| None
            )
            .unwrap()),
            Some(key())
        );
        for verified in [false, true] {
            let mut o = sample();
            o.verified = verified;
            assert_eq!(
                Observation::decode(&o.encode(Some(&key())), Some(&key())).unwrap(),
                o
            );
        }
    }

    /// A worker still running a previous version (rolling upgrade) sends `SSO2` or `SSO1`
    /// messages: they decode, and as unverified (hints), whatever the old worker checked: an
    /// untagged claim is what any plugin can write. An `SSO2` claim is counted.
    #[test]
    fn previous_versions_decode_as_unverified() {
        let o = sample();
        let mut hint = o.clone();
        hint.verified = false;
        let v3 = hint.encode(Some(&key()));
        let mut v2 = b"SSO2".to_vec();
        v2.extend_from_slice(&v3[4..]);
        let mut v1 = b"SSO1".to_vec();
        v1.extend_from_slice(&v3[4..30]);
        v1.extend_from_slice(&v3[31..]);
        let mut v2_claimed = v2.clone();
        v2_claimed[30] = 1;
        for (bytes, vouch) in [
            (v1, Vouch::Hint),
            (v2, Vouch::Hint),
            (v2_claimed, Vouch::Unauthenticated),
        ] {
            let (decoded, v) = Observation::decode_vouched(&bytes, Some(&key())).unwrap();
            assert_eq!(v, vouch);
            assert!(!decoded.verified);
            assert_eq!(decoded.webhook, o.webhook);
            assert_eq!(decoded.outcome, o.outcome);
        }
    }

    /// Another plugin in the same Envoy can write the queue but does not have the webhook
    /// secret: its message claiming a verified webhook is a hint, whatever it carries (no tag,
    /// a tag of its own key, a tag copied from another genuine message, a genuine message
    /// edited). Only a worker's own tagged message is evidence.
    #[test]
    fn only_a_tag_made_with_the_secret_makes_evidence() {
        let genuine = sample();
        let bytes = genuine.encode(Some(&key()));
        assert_eq!(
            Observation::decode_vouched(&bytes, Some(&key())).unwrap(),
            (genuine.clone(), Vouch::Evidence)
        );
        let tag_at = bytes.len() - 32;
        let mut zeros = bytes.clone();
        zeros[tag_at..].fill(0);
        let other_key = genuine.encode(Some(&QueueKey::derive(b"another plugin")));
        let mut evil = genuine.clone();
        evil.webhook.repo_json = Some(r#"{"id":42,"link":"https://evil.example/phish"}"#.into());
        let mut copied_tag = evil.encode(Some(&key()));
        let n = copied_tag.len();
        copied_tag[n - 32..].copy_from_slice(&bytes[tag_at..]);
        let mut flipped = bytes.clone();
        flipped[12] ^= 1; // the build number
        for (name, forged) in [
            ("zero tag", zeros),
            ("another key", other_key),
            ("a genuine tag on other bytes", copied_tag),
            ("an edited genuine message", flipped),
        ] {
            let (obs, vouch) = Observation::decode_vouched(&forged, Some(&key()))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(vouch, Vouch::Unauthenticated, "{name}");
            assert!(!obs.verified, "{name}");
        }
        // Without a key (no webhook secret configured) nothing is evidence, not even ours,
        // and a worker without a key writes no claim at all.
        assert_eq!(
            Observation::decode_vouched(&bytes, None).unwrap().1,
            Vouch::Unauthenticated
        );
        let unkeyed = genuine.encode(None);
        assert_eq!(
            Observation::decode_vouched(&unkeyed, Some(&key()))
                .unwrap()
                .1,
            Vouch::Hint
        );
        // The key is not the secret, and Debug shows neither.
        assert_ne!(key().0.as_slice(), FUZZ_SECRET);
        assert!(!format!("{:?}", key()).contains(&format!("{:?}", key().0)));
    }

    /// Every status a worker can parse crosses the queue as it was, including one drone adds
    /// after this filter was built (kept as `unknown`, which counts as done): the webhook is
    /// not lost between the worker and the reconciler.
    #[test]
    fn every_status_crosses_the_queue_including_unknown_ones() {
        for name in [
            "skipped",
            "blocked",
            "declined",
            "waiting_on_dependencies",
            "pending",
            "running",
            "success",
            "failure",
            "killed",
            "error",
            "a_status_drone_adds_later",
        ] {
            let mut o = sample();
            o.webhook.status = BuildStatus::parse(name);
            let decoded = Observation::decode(&o.encode(Some(&key())), Some(&key()));
            assert_eq!(decoded, Ok(o), "{name}");
        }
    }

    /// A message of a version this reconciler does not know (a newer worker during a rolling
    /// change, or anything else) is refused, even when the rest of it would decode as one it
    /// knows: it is never read with the wrong layout.
    #[test]
    fn messages_of_an_unknown_version_are_refused() {
        let mut hint = sample();
        hint.verified = false;
        let v3 = hint.encode(Some(&key()));
        let mut v1 = b"SSO1".to_vec();
        v1.extend_from_slice(&v3[4..30]);
        v1.extend_from_slice(&v3[31..]);
        assert!(Observation::decode(&v1, Some(&key())).is_ok());
        for magic in [b"SSO4", b"SSO0", b"sso1", b"\0\0\0\0"] {
            for known in [&v1, &v3] {
                let mut bytes = known.clone();
                bytes[..4].copy_from_slice(magic);
                assert!(
                    Observation::decode(&bytes, Some(&key())).is_err(),
                    "{}",
                    String::from_utf8_lossy(magic)
                );
            }
        }
    }

    /// A configuration or reconciler printed with `{:?}` shows that a queue key exists, and
    /// only that: the key itself (which tags evidence) is never in a log line.
    #[test]
    fn the_queue_key_debugs_as_redacted() {
        assert_eq!(
            format!("{:?}", key()),
            format!("QueueKey({})", crate::core::redact::REDACTED)
        );
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
            assert!(
                Observation::decode(&o.encode(Some(&key())), Some(&key())).is_err(),
                "edit {i}"
            );
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
            let w = Observation::decode(&o.encode(Some(&key())), Some(&key()))
                .unwrap()
                .webhook;
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
        assert_eq!(
            Observation::decode(&o.encode(Some(&key())), Some(&key())).unwrap(),
            o
        );
    }

    #[test]
    fn garbage_is_an_error() {
        let good = sample().encode(Some(&key()));
        let empty_ns = {
            let mut o = sample();
            o.webhook.repo.namespace.clear();
            o.encode(Some(&key()))
        };
        let empty_name = {
            let mut o = sample();
            o.webhook.repo.name.clear();
            o.encode(Some(&key()))
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
                Observation::decode(b, Some(&key())).is_err(),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }
}
