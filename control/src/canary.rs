//! Progressive canaries (Argo Rollouts' canary steps; KServe's `canaryTrafficPercent`): a plan
//! moves a rule's traffic to the canary version step by step. Each step holds its weight for its
//! pause and advances only once an analysis of the canary's own metrics passed during it; a failed
//! analysis (past the plan's failure limit) rolls back to the stable version at once; after the
//! last step the canary is promoted (100%). Operators can pause, resume, abort and promote.
//!
//! A pure state machine over explicit time (seconds): the runner feeds it verdicts and commands.

use meridian_config::schema::CanaryPlan;
use serde::{Deserialize, Serialize};

/// Where a plan stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Stepping through the weights.
    Progressing,
    /// Held by an operator at the current weight.
    Paused,
    /// Done: the canary takes all of the rule's traffic.
    Promoted,
    /// An analysis failed: the stable version takes all traffic again.
    RolledBack,
    /// Stopped by an operator: the stable version takes all traffic again.
    Aborted,
}

/// The verdict of one analysis over the canary's recent traffic.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Success rate and latency within bounds.
    Pass,
    /// Out of bounds, with why.
    Fail(String),
    /// Too little traffic (or no metrics) to judge, with why.
    Inconclusive(String),
}

/// A plan's progress; persisted so a restarted control loop resumes where it was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Plan name.
    pub plan: String,
    /// The versions it moves between (a plan edited to other versions starts over).
    pub stable: String,
    /// The version rolling out.
    pub canary: String,
    /// Where it stands.
    pub phase: Phase,
    /// Index of the current step.
    pub step: usize,
    /// When the current step started, Unix seconds.
    pub step_started: f64,
    /// Percent of traffic to the canary now.
    pub weight: u32,
    /// Whether an analysis passed during the current step.
    pub passed_in_step: bool,
    /// Failed analyses so far.
    pub failures: u32,
    /// The last analysis, in words.
    pub last_analysis: Option<String>,
    /// Why the plan ended as it did, or is paused.
    pub reason: Option<String>,
}

/// What a tick or command changed, for logs and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Moved to step `n` at `weight`.
    Advanced { step: usize, weight: u32 },
    /// Promoted.
    Promoted,
    /// Rolled back.
    RolledBack,
    /// Paused, resumed or aborted by an operator.
    Operator(&'static str),
}

/// An operator's command on a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Hold at the current weight.
    Pause,
    /// Continue from a pause (the current step's pause starts over).
    Resume,
    /// Stop and send all traffic to the stable version.
    Abort,
    /// Skip the remaining steps: all traffic to the canary.
    Promote,
}

impl Command {
    /// Parses the admin API's verb.
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "pause" => Command::Pause,
            "resume" => Command::Resume,
            "abort" => Command::Abort,
            "promote" => Command::Promote,
            _ => return None,
        })
    }
}

impl Progress {
    /// A plan starting at its first step.
    pub fn start(plan: &CanaryPlan, now: f64) -> Progress {
        Progress {
            plan: plan.name.clone(),
            stable: plan.stable.clone(),
            canary: plan.canary.clone(),
            phase: Phase::Progressing,
            step: 0,
            step_started: now,
            weight: plan.steps.first().map_or(0, |s| s.weight),
            passed_in_step: false,
            failures: 0,
            last_analysis: None,
            reason: None,
        }
    }

    /// Whether this progress belongs to `plan` as configured now.
    pub fn fits(&self, plan: &CanaryPlan) -> bool {
        self.plan == plan.name
            && self.stable == plan.stable
            && self.canary == plan.canary
            && self.step < plan.steps.len().max(1)
    }

    /// One analysis at `now`.
    pub fn tick(&mut self, plan: &CanaryPlan, now: f64, verdict: Verdict) -> Option<Event> {
        if self.phase != Phase::Progressing {
            return None;
        }
        match verdict {
            Verdict::Fail(why) => {
                self.failures += 1;
                self.last_analysis = Some(format!("failed: {why}"));
                if self.failures >= plan.analysis.failure_limit.max(1) {
                    self.phase = Phase::RolledBack;
                    self.weight = 0;
                    self.reason = Some(why);
                    return Some(Event::RolledBack);
                }
                return None;
            }
            Verdict::Inconclusive(why) => self.last_analysis = Some(format!("inconclusive: {why}")),
            Verdict::Pass => {
                self.passed_in_step = true;
                self.last_analysis = Some("passed".into());
            }
        }
        let pause = plan.steps.get(self.step).map_or(0.0, |s| s.pause.get().as_secs_f64());
        if !self.passed_in_step || now - self.step_started < pause {
            return None;
        }
        self.step += 1;
        self.passed_in_step = false;
        self.step_started = now;
        match plan.steps.get(self.step) {
            Some(s) => {
                self.weight = s.weight;
                Some(Event::Advanced {
                    step: self.step,
                    weight: s.weight,
                })
            }
            None => {
                self.step = plan.steps.len().saturating_sub(1);
                self.phase = Phase::Promoted;
                self.weight = 100;
                Some(Event::Promoted)
            }
        }
    }

    /// Applies an operator's command; errors say why it does not apply now.
    pub fn command(&mut self, cmd: Command, now: f64) -> Result<Event, CommandError> {
        let done = matches!(self.phase, Phase::Promoted | Phase::RolledBack | Phase::Aborted);
        match (cmd, self.phase) {
            (_, _) if done => Err(CommandError::Finished(self.phase)),
            (Command::Pause, Phase::Progressing) => {
                self.phase = Phase::Paused;
                self.reason = Some("paused by an operator".into());
                Ok(Event::Operator("pause"))
            }
            (Command::Resume, Phase::Paused) => {
                self.phase = Phase::Progressing;
                self.step_started = now;
                self.reason = None;
                Ok(Event::Operator("resume"))
            }
            (Command::Abort, _) => {
                self.phase = Phase::Aborted;
                self.weight = 0;
                self.reason = Some("aborted by an operator".into());
                Ok(Event::Operator("abort"))
            }
            (Command::Promote, _) => {
                self.phase = Phase::Promoted;
                self.weight = 100;
                self.reason = Some("promoted by an operator".into());
                Ok(Event::Promoted)
            }
            (Command::Pause, _) => Err(CommandError::NotProgressing),
            (Command::Resume, _) => Err(CommandError::NotPaused),
        }
    }
}

/// Why an operator's command does not apply to a plan now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The plan has finished (promoted, rolled back or aborted).
    #[error("the plan is already {}", format!("{:?}", .0).to_lowercase())]
    Finished(Phase),
    /// Pause needs a progressing plan.
    #[error("only a progressing plan can be paused")]
    NotProgressing,
    /// Resume needs a paused plan.
    #[error("only a paused plan can be resumed")]
    NotPaused,
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_config::schema::{Analysis, CanaryStep};
    use meridian_config::units::Duration;

    fn plan() -> CanaryPlan {
        CanaryPlan {
            name: "p".into(),
            model: "m".into(),
            route: None,
            stable: "v1".into(),
            canary: "v2".into(),
            steps: vec![
                CanaryStep {
                    weight: 10,
                    pause: Duration::secs(60),
                },
                CanaryStep {
                    weight: 50,
                    pause: Duration::secs(60),
                },
            ],
            analysis: Analysis {
                failure_limit: 2,
                ..Analysis::default()
            },
        }
    }

    #[test]
    fn steps_advance_after_their_pause_and_a_passing_analysis_then_promote() {
        let p = plan();
        let mut s = Progress::start(&p, 0.0);
        assert_eq!((s.phase, s.weight), (Phase::Progressing, 10));
        assert_eq!(s.tick(&p, 30.0, Verdict::Pass), None, "pause not over");
        assert_eq!(
            s.tick(&p, 61.0, Verdict::Inconclusive("3 requests".into())),
            Some(Event::Advanced { step: 1, weight: 50 }),
            "passed earlier in the step"
        );
        assert_eq!(
            s.tick(&p, 200.0, Verdict::Inconclusive("0 requests".into())),
            None,
            "no pass yet"
        );
        assert_eq!(s.tick(&p, 201.0, Verdict::Pass), Some(Event::Promoted));
        assert_eq!((s.phase, s.weight), (Phase::Promoted, 100));
        assert_eq!(
            s.tick(&p, 300.0, Verdict::Fail("late".into())),
            None,
            "a finished plan stays"
        );
    }

    #[test]
    fn failures_past_the_limit_roll_back() {
        let p = plan();
        let mut s = Progress::start(&p, 0.0);
        assert_eq!(s.tick(&p, 1.0, Verdict::Fail("success rate 0.50 < 0.99".into())), None);
        assert_eq!(s.phase, Phase::Progressing, "one failure is within the limit of 2");
        assert_eq!(
            s.tick(&p, 2.0, Verdict::Fail("success rate 0.40 < 0.99".into())),
            Some(Event::RolledBack)
        );
        assert_eq!((s.phase, s.weight), (Phase::RolledBack, 0));
        assert_eq!(s.reason.as_deref(), Some("success rate 0.40 < 0.99"));
    }

    #[test]
    fn operator_commands() {
        let p = plan();
        let mut s = Progress::start(&p, 0.0);
        assert_eq!(s.command(Command::Pause, 5.0), Ok(Event::Operator("pause")));
        assert_eq!(s.tick(&p, 100.0, Verdict::Pass), None, "paused plans hold");
        assert!(s.command(Command::Pause, 6.0).is_err());
        assert_eq!(s.command(Command::Resume, 100.0), Ok(Event::Operator("resume")));
        assert_eq!(
            s.tick(&p, 120.0, Verdict::Pass),
            None,
            "the pause starts over on resume"
        );
        assert_eq!(s.command(Command::Promote, 121.0), Ok(Event::Promoted));
        assert_eq!(s.weight, 100);
        assert!(s.command(Command::Abort, 122.0).is_err(), "finished");
        let mut t = Progress::start(&p, 0.0);
        assert_eq!(t.command(Command::Abort, 1.0), Ok(Event::Operator("abort")));
        assert_eq!((t.phase, t.weight), (Phase::Aborted, 0));
        assert_eq!(Command::parse("promote"), Some(Command::Promote));
        assert_eq!(Command::parse("nope"), None);
    }
}
