//! Domain types shared by every part of the core.

/// A drone build status (`core/status.go`). Unknown strings are kept as [`BuildStatus::Unknown`]
/// and, like drone's `IsDone()`, count as done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BuildStatus {
    Skipped,
    Blocked,
    Declined,
    WaitingOnDependencies,
    Pending,
    Running,
    Success,
    Failure,
    Killed,
    Error,
    Unknown,
}

impl BuildStatus {
    /// Parses drone's wire string; anything unrecognised is `Unknown`.
    pub fn parse(s: &str) -> Self {
        match s {
            "skipped" => Self::Skipped,
            "blocked" => Self::Blocked,
            "declined" => Self::Declined,
            "waiting_on_dependencies" => Self::WaitingOnDependencies,
            "pending" => Self::Pending,
            "running" => Self::Running,
            "success" => Self::Success,
            "failure" => Self::Failure,
            "killed" => Self::Killed,
            "error" => Self::Error,
            _ => Self::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skipped => "skipped",
            Self::Blocked => "blocked",
            Self::Declined => "declined",
            Self::WaitingOnDependencies => "waiting_on_dependencies",
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Killed => "killed",
            Self::Error => "error",
            Self::Unknown => "unknown",
        }
    }

    /// Drone's `Build.IsDone()`: false only for waiting_on_dependencies, pending, running and
    /// blocked; every other value (including unknown ones) is terminal.
    pub fn is_done(self) -> bool {
        !matches!(
            self,
            Self::WaitingOnDependencies | Self::Pending | Self::Running | Self::Blocked
        )
    }

    /// Compact code used by the ledger snapshot.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(c: u8) -> Self {
        match c {
            0 => Self::Skipped,
            1 => Self::Blocked,
            2 => Self::Declined,
            3 => Self::WaitingOnDependencies,
            4 => Self::Pending,
            5 => Self::Running,
            6 => Self::Success,
            7 => Self::Failure,
            8 => Self::Killed,
            9 => Self::Error,
            _ => Self::Unknown,
        }
    }
}

/// Identifies a build: drone's repository id and the per-repository build number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BuildKey {
    pub repo_id: u64,
    pub number: u64,
}

/// The parts of a drone repository needed to address the REST API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoRef {
    pub id: u64,
    pub namespace: String,
    pub name: String,
}

/// What a live `build` webhook said, as parsed by the HTTP filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedWebhook {
    pub repo: RepoRef,
    pub number: u64,
    pub status: BuildStatus,
    /// `build.version`: drone's optimistic-lock counter, the only reliable order.
    pub version: u64,
    /// `action` of the webhook (`created` or `updated`).
    pub action: String,
    /// The `repo` object as drone sent it, without its nested `build`, for re-deliveries.
    pub repo_json: Option<String>,
    /// The `system` object, when drone sent one.
    pub system_json: Option<String>,
}

impl ParsedWebhook {
    pub fn key(&self) -> BuildKey {
        BuildKey {
            repo_id: self.repo.id,
            number: self.number,
        }
    }
}

/// How the pipeline answered a delivery (live or re-delivered).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryOutcome {
    /// 2xx: the pipeline has this transition.
    Delivered,
    /// 4xx other than 408/429: the pipeline refused it; retrying would not help.
    Refused,
    /// 5xx, 408, 429, 3xx, reset, timeout or no answer: the pipeline does not have it.
    NotDelivered,
}

impl DeliveryOutcome {
    /// Classifies the pipeline's HTTP status (`None` = reset, timeout, or no response).
    pub fn from_status(status: Option<u16>) -> Self {
        match status {
            Some(200..=299) => Self::Delivered,
            Some(408) | Some(429) => Self::NotDelivered,
            Some(400..=499) => Self::Refused,
            _ => Self::NotDelivered,
        }
    }
}

/// Why a piece of input was rejected. Typed so callers can count each kind separately.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// Not valid JSON, or not the expected shape.
    Json(String),
    /// A required field is missing.
    Missing(&'static str),
    /// A field has a value we cannot use (e.g. an empty repository name).
    Invalid(&'static str),
    /// The event or action is not a build transition (e.g. `repo:enabled`).
    NotABuildEvent,
    /// Larger than the configured limit.
    TooLarge,
    /// A field outside the input limits of [`super::limits`] (size, range or characters):
    /// nothing drone could send.
    Limit(&'static str),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Json(e) => write!(f, "invalid JSON: {e}"),
            Self::Missing(field) => write!(f, "missing field `{field}`"),
            Self::Invalid(field) => write!(f, "invalid value for `{field}`"),
            Self::NotABuildEvent => write!(f, "not a build event"),
            Self::TooLarge => write!(f, "body too large"),
            Self::Limit(field) => write!(f, "`{field}` outside the input limits"),
        }
    }
}

impl std::error::Error for ParseError {}

/// A scanner error is a JSON error of whatever was being parsed. Cold, so that the parsers'
/// many `?` on the scanner keep their happy paths small.
impl From<super::json::JsonError> for ParseError {
    #[cold]
    fn from(e: super::json::JsonError) -> Self {
        Self::Json(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_and_done_matches_drone() {
        // Every status drone has survives the snapshot's code and its own name.
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
        ] {
            let s = BuildStatus::parse(name);
            assert_ne!(s, BuildStatus::Unknown, "{name}");
            assert_eq!(BuildStatus::from_code(s.code()), s, "{name}");
            assert_eq!(s.as_str(), name);
        }
        assert_eq!(
            BuildStatus::from_code(BuildStatus::Unknown.code()),
            BuildStatus::Unknown
        );
        assert_eq!(BuildStatus::from_code(200), BuildStatus::Unknown);
        assert!(!BuildStatus::Running.is_done());
        assert!(!BuildStatus::Pending.is_done());
        assert!(!BuildStatus::Blocked.is_done());
        assert!(!BuildStatus::WaitingOnDependencies.is_done());
        assert!(BuildStatus::Declined.is_done());
        assert!(BuildStatus::parse("bogus").is_done());
    }

    /// The reasons logged for input the filter passes through unparsed (docs/security.md, "Bad input").
    #[test]
    fn parse_errors_say_what_was_wrong() {
        for (e, text) in [
            (ParseError::Json("eof".into()), "invalid JSON: eof"),
            (ParseError::Missing("build"), "missing field `build`"),
            (ParseError::Invalid("status"), "invalid value for `status`"),
            (ParseError::NotABuildEvent, "not a build event"),
            (ParseError::TooLarge, "body too large"),
            (
                ParseError::Limit("repo.name"),
                "`repo.name` outside the input limits",
            ),
        ] {
            assert_eq!(e.to_string(), text);
        }
    }

    #[test]
    fn pipeline_status_classification() {
        use DeliveryOutcome::{Delivered, NotDelivered, Refused};
        for (status, want) in [
            (Some(200), Delivered),
            (Some(204), Delivered),
            (Some(400), Refused),
            (Some(404), Refused),
            (Some(408), NotDelivered),
            (Some(429), NotDelivered),
            (Some(500), NotDelivered),
            (Some(302), NotDelivered),
            (None, NotDelivered),
        ] {
            assert_eq!(DeliveryOutcome::from_status(status), want, "{status:?}");
        }
    }
}
