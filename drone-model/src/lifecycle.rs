//! Drone's build lifecycle, as one small state machine: which event writes the build row
//! (and so bumps its `version`, drone's optimistic-lock counter) and which sends a webhook, of
//! which shape (drone-server 2.25's `trigger/trigger.go`, `operator/manager/`,
//! `plugin/webhook/`).
//!
//! - create: `build:created`, `pending` version 1 (a config error: `error` version 1,
//!   terminal at once, webhook #2);
//! - setup (pending→running): a write, **no** webhook;
//! - every step start and end: `build:updated` repeating the row (running, same version), no
//!   write;
//! - teardown: the final status (version + 1), the last `build:updated` (webhook #4); a build
//!   can be torn down without ever running;
//! - cancel: `killed` (version + 1), webhook #5 without `repo.build`; a runner's step report or
//!   teardown that comes after the cancel may still send (late step webhooks carry `killed`;
//!   a teardown that read the row after the cancel writes `killed` again, version + 1);
//! - auto-cancel of a pending build: `skipped` (version + 1), webhook #7;
//! - decline of a blocked stage: `declined` (version + 1), no webhook ever.
//!
//! Every driver (the HTTP simulator's [`crate::server::Drone`], the chaos suite, the
//! benchmarks) decides *when* events happen; this decides what they do.

/// True for drone's done statuses (`Build.IsDone()`): everything except
/// waiting_on_dependencies, pending, running and blocked.
pub fn is_done(status: &str) -> bool {
    !matches!(
        status,
        "waiting_on_dependencies" | "pending" | "running" | "blocked"
    )
}

/// Which of drone's webhook call sites sent a webhook: that decides the payload's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// #1/#2 `build:created`: with `user`, no `repo.build`, no stages.
    Created,
    /// #3/#4 step and teardown `build:updated`: `repo.build` is the build.
    Updated,
    /// #5/#7 cancel and auto-cancel `build:updated`: no `repo.build`.
    Cancel,
}

impl Shape {
    /// The webhook's `action`.
    pub fn action(self) -> &'static str {
        match self {
            Shape::Created => "created",
            Shape::Updated | Shape::Cancel => "updated",
        }
    }
}

/// A webhook drone sends: its shape and the row it carries (frozen at send time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hook {
    pub shape: Shape,
    pub status: &'static str,
    pub version: u64,
}

/// What drone does to a build at some time: the events a driver schedules, applied to the row
/// by [`Row::act`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// `repos.Increment` before the row: the number is taken (the repository's `counter`
    /// moves), nothing is written yet (two triggers racing, `trigger/trigger.go`).
    Reserve,
    /// `trigger.go`: the row is inserted, `build:created` (a config error: created `error`).
    Create,
    /// Setup: pending → running, no webhook.
    Setup,
    /// A step start or end: `build:updated` with drone's current state.
    Step,
    /// Teardown: the final status (only if all stages completed).
    Teardown(&'static str),
    /// `DELETE /api/repos/o/n/builds/n` while pending or running.
    Cancel,
    /// Auto-cancel of a pending build.
    Skip,
    /// Decline of a blocked stage.
    Decline,
}

/// The build row as far as the lifecycle goes: status, version, whether a runner picked it up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub status: &'static str,
    pub version: u64,
    /// Setup ran: a runner has the build (its steps report, its teardown may come late).
    pub ran: bool,
    /// The version of the first terminal write (a teardown after a cancel writes `killed`
    /// again, with a newer one).
    pub first_done_version: Option<u64>,
}

impl Default for Row {
    fn default() -> Row {
        Row::new()
    }
}

impl Row {
    /// A build not written yet (version 0): drone has not run `trigger.go` for it.
    pub fn new() -> Row {
        Row {
            status: "pending",
            version: 0,
            ran: false,
            first_done_version: None,
        }
    }

    /// `trigger.go`: the row is inserted (version 1) and `build:created` sent.
    pub fn create(&mut self, config_error: bool) -> Hook {
        let status = if config_error { "error" } else { "pending" };
        self.write(status, Shape::Created)
    }

    /// Drone does `act` to the row; the webhook it sends, if any. `config_error`: the build's
    /// YAML does not parse. `chance(p)` is the driver's draw for drone's races, made only
    /// where one decides: after a cancel, a step report still sends (p 0.3: late step
    /// webhooks carry `killed`), and a teardown either lost the optimistic lock and sends
    /// nothing (p 0.5) or read the row after the cancel and writes `killed` again (§4); a
    /// build cancelled before setup never had a runner, so no teardown.
    pub fn act(
        &mut self,
        act: Act,
        config_error: bool,
        chance: &mut dyn FnMut(f64) -> bool,
    ) -> Option<Hook> {
        match act {
            Act::Reserve => None,
            Act::Create => Some(self.create(config_error)),
            Act::Setup => {
                self.setup(); // nothing when cancelled before it started
                None
            }
            // Cancelled: the runner stopped (or never started); only some late step webhooks
            // remain, carrying `killed`.
            Act::Step if !self.ran => None,
            Act::Step if self.is_done() => self.late_step().filter(|_| chance(0.3)),
            Act::Step => self.step(),
            Act::Teardown(_) if self.status == "killed" => {
                if !self.ran || chance(0.5) {
                    None
                } else {
                    self.teardown_after_cancel()
                }
            }
            Act::Teardown(status) => self.teardown(status),
            Act::Cancel => self.cancel(),
            Act::Skip => self.auto_cancel(),
            Act::Decline => {
                self.decline();
                None
            }
        }
    }

    pub fn is_done(&self) -> bool {
        is_done(self.status)
    }

    fn write(&mut self, status: &'static str, shape: Shape) -> Hook {
        self.status = status;
        self.version += 1;
        if is_done(status) && self.first_done_version.is_none() {
            self.first_done_version = Some(self.version);
        }
        self.hook(shape)
    }

    fn hook(&self, shape: Shape) -> Hook {
        Hook {
            shape,
            status: self.status,
            version: self.version,
        }
    }

    /// `manager/setup.go`: pending→running, a write and no webhook. False (nothing written)
    /// when the build is no longer pending (cancelled before a runner took it).
    pub fn setup(&mut self) -> bool {
        if self.status != "pending" {
            return false;
        }
        self.ran = true;
        self.write("running", Shape::Updated);
        true
    }

    /// `manager/updater.go`: a step start or end sends `build:updated` with whatever the row
    /// says, without writing it. Nothing once the build is done (the runner stopped).
    pub fn step(&self) -> Option<Hook> {
        (!self.is_done()).then(|| self.hook(Shape::Updated))
    }

    /// A step report that comes after the build was cancelled (the runner had not stopped
    /// yet): it carries `killed`. Only a build a runner had can report.
    pub fn late_step(&self) -> Option<Hook> {
        (self.ran && self.is_done()).then(|| self.hook(Shape::Updated))
    }

    /// `manager/teardown.go`: the final status (a write) and the last `build:updated`.
    /// Nothing when the build is already done.
    pub fn teardown(&mut self, status: &'static str) -> Option<Hook> {
        (!self.is_done()).then(|| self.write(status, Shape::Updated))
    }

    /// A teardown that read the row after a cancel (and did not lose the optimistic lock)
    /// writes `killed` again and sends webhook #4. Only a cancelled build a runner had.
    pub fn teardown_after_cancel(&mut self) -> Option<Hook> {
        (self.status == "killed" && self.ran).then(|| self.write("killed", Shape::Updated))
    }

    /// `cancel.go`: `killed`, webhook #5. Nothing when the build is already done.
    pub fn cancel(&mut self) -> Option<Hook> {
        (!self.is_done()).then(|| self.write("killed", Shape::Cancel))
    }

    /// `canceler.CancelPending` (a newer push supersedes it; a running build only with
    /// `auto_cancel_running`, the driver's choice): `skipped`, webhook #7.
    pub fn auto_cancel(&mut self) -> Option<Hook> {
        (!self.is_done()).then(|| self.write("skipped", Shape::Cancel))
    }

    /// `stages/decline.go`: `declined`, a write and no webhook, ever. False when the build
    /// was no longer waiting.
    pub fn decline(&mut self) -> bool {
        if self.status != "pending" {
            return false;
        }
        self.write("declined", Shape::Updated);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(shape: Shape, status: &'static str, version: u64) -> Option<Hook> {
        Some(Hook {
            shape,
            status,
            version,
        })
    }

    #[test]
    fn a_build_that_runs_sends_created_steps_and_final() {
        let mut r = Row::new();
        let created = r.create(false);
        assert_eq!(Some(created), hook(Shape::Created, "pending", 1));
        assert!(r.setup(), "pending→running");
        assert_eq!(r.version, 2, "setup writes the row");
        assert_eq!(r.step(), hook(Shape::Updated, "running", 2));
        assert_eq!(r.step(), hook(Shape::Updated, "running", 2), "no write");
        assert_eq!(r.teardown("failure"), hook(Shape::Updated, "failure", 3));
        assert_eq!((r.step(), r.late_step().is_some()), (None, true));
        assert_eq!(r.teardown("success"), None, "done stays done");
        assert_eq!(r.first_done_version, Some(3));
    }

    #[test]
    fn cancel_and_the_teardown_after_it() {
        let mut r = Row::new();
        r.create(false);
        r.setup();
        assert_eq!(r.cancel(), hook(Shape::Cancel, "killed", 3));
        assert_eq!(r.cancel(), None);
        assert_eq!(r.late_step(), hook(Shape::Updated, "killed", 3));
        assert_eq!(r.teardown_after_cancel(), hook(Shape::Updated, "killed", 4));
        assert_eq!(r.first_done_version, Some(3));
        // Cancelled while pending: no runner, so no late reports and no teardown.
        let mut p = Row::new();
        p.create(false);
        assert!(p.cancel().is_some());
        assert!(!p.setup());
        assert_eq!((p.late_step(), p.teardown_after_cancel()), (None, None));
    }

    #[test]
    fn pending_endings() {
        let mut s = Row::new();
        s.create(false);
        assert_eq!(s.auto_cancel(), hook(Shape::Cancel, "skipped", 2));
        let mut d = Row::new();
        d.create(false);
        assert!(d.decline());
        assert_eq!((d.status, d.version), ("declined", 2));
        assert_eq!(d.step(), None);
        let mut n = Row::new();
        n.create(false);
        assert_eq!(n.teardown("error"), hook(Shape::Updated, "error", 2));
        assert!(!n.ran, "torn down without running");
        let mut c = Row::new();
        let created = c.create(true);
        assert_eq!(Some(created), hook(Shape::Created, "error", 1));
        assert!(c.is_done());
    }

    #[test]
    fn acts_after_a_cancel_send_only_what_drone_races_let_through() {
        let (mut never, mut always) = (|_: f64| false, |_: f64| true);
        let mut r = Row::new();
        r.act(Act::Create, false, &mut never);
        r.act(Act::Setup, false, &mut never);
        assert_eq!(
            r.act(Act::Cancel, false, &mut never),
            hook(Shape::Cancel, "killed", 3)
        );
        assert_eq!(
            r.act(Act::Step, false, &mut never),
            None,
            "the late step lost the race"
        );
        let late = r.act(Act::Step, false, &mut always);
        assert_eq!(late, hook(Shape::Updated, "killed", 3));
        assert_eq!(
            r.act(Act::Teardown("success"), false, &mut always),
            None,
            "lost the lock"
        );
        let again = r.act(Act::Teardown("success"), false, &mut never);
        assert_eq!(again, hook(Shape::Updated, "killed", 4));
        // Cancelled before setup: no runner, no teardown, no step reports.
        let mut p = Row::new();
        p.act(Act::Create, false, &mut never);
        p.act(Act::Cancel, false, &mut never);
        assert_eq!(p.act(Act::Step, false, &mut always), None);
        assert_eq!(p.act(Act::Teardown("success"), false, &mut never), None);
        let mut e = Row::new();
        assert_eq!(
            e.act(Act::Create, true, &mut never),
            hook(Shape::Created, "error", 1)
        );
    }
}
