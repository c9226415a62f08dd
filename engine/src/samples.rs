//! Sample orchestrations of the classic patterns, used by tests, the benchmark and the server so
//! a fresh install has something real to run.
//!
//! - [`HelloSequence`]: function chaining (`SayHello` once per name, in order); `HelloN` is the
//!   benchmark's hello-N.
//! - [`FanOutFanIn`]: n parallel `Square` calls, summed.
//! - [`Monitor`]: polls `CheckJob` with exponential backoff through continue-as-new, stopping when
//!   the job is done or the deadline passes.
//! - [`HumanInteraction`]: waits for an `Approval` event with a timeout; on timeout it calls
//!   `Escalate`.
//!
//! Each validates its input ([`Orchestration::validate`]): sizes and waits are bounded
//! ([`MAX_NAMES`], [`MAX_HELLO_STEPS`], [`MAX_FAN_OUT`], [`MAX_WAIT_MS`]), so a start with an
//! absurd input is refused with a message instead of exhausting memory or overflowing.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most names [`HelloSequence`] greets in one instance.
pub const MAX_NAMES: usize = 1_000;
/// Most sequential calls [`HelloN`] makes.
pub const MAX_HELLO_STEPS: u32 = 1_000;
/// Most parallel calls [`FanOutFanIn`] makes (each is a stored activity and two history events).
pub const MAX_FAN_OUT: u64 = 10_000;
/// Longest wait the monitor and the approval sample accept: one year.
pub const MAX_WAIT_MS: u64 = 366 * 24 * 3600 * 1000;

use crate::{
    Either, Failure, Orchestration, OrchestrationContext, Registry,
    registry::{Activity, ActivityContext},
    select, when_all,
};

/// Greets one name.
#[derive(Debug)]
pub struct SayHello;
impl Activity for SayHello {
    const NAME: &'static str = "SayHello";
    type Input = String;
    type Output = String;
    async fn run(&self, _: ActivityContext, name: String) -> Result<String, Failure> {
        Ok(format!("Hello, {name}!"))
    }
}

/// Squares a number.
#[derive(Debug)]
pub struct Square;
impl Activity for Square {
    const NAME: &'static str = "Square";
    type Input = u64;
    type Output = u64;
    async fn run(&self, _: ActivityContext, n: u64) -> Result<u64, Failure> {
        n.checked_mul(n)
            .ok_or_else(|| Failure::new("Overflow", format!("{n} squared does not fit in 64 bits")))
    }
}

/// Function chaining: greets each name in turn.
#[derive(Debug)]
pub struct HelloSequence;
impl Orchestration for HelloSequence {
    const NAME: &'static str = "HelloSequence";
    type Input = Vec<String>;
    type Output = Vec<String>;
    fn validate(names: &Vec<String>) -> Result<(), String> {
        if names.len() > MAX_NAMES {
            return Err(format!(
                "greets at most {MAX_NAMES} names, not {}",
                names.len()
            ));
        }
        Ok(())
    }
    async fn run(ctx: OrchestrationContext, names: Vec<String>) -> Result<Vec<String>, Failure> {
        let mut greetings = Vec::with_capacity(names.len());
        for name in &names {
            greetings.push(ctx.call_activity::<SayHello>(name).await?);
        }
        Ok(greetings)
    }
}

/// hello-N: n sequential `SayHello` calls (the benchmark's workload).
#[derive(Debug)]
pub struct HelloN;
impl Orchestration for HelloN {
    const NAME: &'static str = "HelloN";
    type Input = u32;
    type Output = u32;
    fn validate(n: &u32) -> Result<(), String> {
        if *n > MAX_HELLO_STEPS {
            return Err(format!("makes at most {MAX_HELLO_STEPS} calls, not {n}"));
        }
        Ok(())
    }
    async fn run(ctx: OrchestrationContext, n: u32) -> Result<u32, Failure> {
        for i in 0..n {
            ctx.call_activity::<SayHello>(&i.to_string()).await?;
        }
        Ok(n)
    }
}

/// Fan-out/fan-in: squares 1..=n in parallel and sums the results.
#[derive(Debug)]
pub struct FanOutFanIn;
impl Orchestration for FanOutFanIn {
    const NAME: &'static str = "FanOutFanIn";
    type Input = u64;
    type Output = u64;
    fn validate(n: &u64) -> Result<(), String> {
        if *n > MAX_FAN_OUT {
            return Err(format!(
                "fans out to at most {MAX_FAN_OUT} parallel calls, not {n}"
            ));
        }
        Ok(())
    }
    async fn run(ctx: OrchestrationContext, n: u64) -> Result<u64, Failure> {
        let calls: Vec<_> = (1..=n).map(|i| ctx.call_activity::<Square>(&i)).collect();
        let mut sum: u64 = 0;
        for result in when_all(calls).await {
            sum = sum.saturating_add(result?);
        }
        Ok(sum)
    }
}

/// Reports whether a job is done. The sample job is done from its `ready_after`-th check on.
#[derive(Debug)]
pub struct CheckJob;
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobCheck {
    pub job_id: String,
    pub check: u32,
    pub ready_after: u32,
}
impl Activity for CheckJob {
    const NAME: &'static str = "CheckJob";
    type Input = JobCheck;
    type Output = bool;
    async fn run(&self, _: ActivityContext, check: JobCheck) -> Result<bool, Failure> {
        Ok(check.check >= check.ready_after)
    }
}

/// The monitor's state, carried from one execution to the next.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorInput {
    pub job_id: String,
    /// Checks done so far.
    pub checks: u32,
    /// The sample job is done from this check on (`u32::MAX`: never).
    pub ready_after: u32,
    pub interval_ms: u64,
    pub max_interval_ms: u64,
    /// Give up after this time (ms since the epoch); set from the first execution's clock when 0.
    pub deadline_ms: i64,
    /// How long to keep polling, used to set `deadline_ms` on the first execution.
    pub timeout_ms: u64,
}

/// The monitor's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MonitorOutcome {
    Done { checks: u32 },
    TimedOut { checks: u32 },
}

/// An eternal monitor: check, back off, continue as new; stop when done or past the deadline.
#[derive(Debug)]
pub struct Monitor;
impl Orchestration for Monitor {
    const NAME: &'static str = "Monitor";
    type Input = MonitorInput;
    type Output = MonitorOutcome;
    fn validate(input: &MonitorInput) -> Result<(), String> {
        if input.interval_ms == 0 || input.interval_ms > MAX_WAIT_MS {
            return Err(format!(
                "interval_ms must be between 1 and {MAX_WAIT_MS}, not {}",
                input.interval_ms
            ));
        }
        if input.max_interval_ms < input.interval_ms || input.max_interval_ms > MAX_WAIT_MS {
            return Err(format!(
                "max_interval_ms must be between interval_ms and {MAX_WAIT_MS}, not {}",
                input.max_interval_ms
            ));
        }
        if input.timeout_ms > MAX_WAIT_MS {
            return Err(format!(
                "timeout_ms must be at most {MAX_WAIT_MS}, not {}",
                input.timeout_ms
            ));
        }
        if input.job_id.len() > 256 {
            return Err("job_id must be at most 256 bytes".into());
        }
        Ok(())
    }
    async fn run(
        ctx: OrchestrationContext,
        mut input: MonitorInput,
    ) -> Result<MonitorOutcome, Failure> {
        if input.deadline_ms == 0 {
            // Bounded by `validate`; saturating all the same.
            input.deadline_ms = ctx.now_ms().saturating_add(input.timeout_ms as i64);
        }
        input.checks = input.checks.saturating_add(1);
        let done = ctx
            .call_activity::<CheckJob>(&JobCheck {
                job_id: input.job_id.clone(),
                check: input.checks,
                ready_after: input.ready_after,
            })
            .await?;
        ctx.set_custom_status(
            &serde_json::json!({ "checks": input.checks, "interval_ms": input.interval_ms }),
        );
        if done {
            return Ok(MonitorOutcome::Done {
                checks: input.checks,
            });
        }
        if ctx.now_ms().saturating_add(input.interval_ms as i64) > input.deadline_ms {
            return Ok(MonitorOutcome::TimedOut {
                checks: input.checks,
            });
        }
        ctx.sleep(Duration::from_millis(input.interval_ms)).await;
        input.interval_ms = input
            .interval_ms
            .saturating_mul(2)
            .min(input.max_interval_ms);
        ctx.continue_as_new(&input).await
    }
}

/// Notifies a manager that an approval timed out.
#[derive(Debug)]
pub struct Escalate;
impl Activity for Escalate {
    const NAME: &'static str = "Escalate";
    type Input = String;
    type Output = String;
    async fn run(&self, _: ActivityContext, request: String) -> Result<String, Failure> {
        Ok(format!("escalated {request} to a manager"))
    }
}

/// An approval request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalRequest {
    pub request: String,
    pub timeout_ms: u64,
}

/// The event payload that answers an approval.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Approval {
    pub approved: bool,
    #[serde(default)]
    pub comment: String,
}

/// The approval's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApprovalOutcome {
    Approved { comment: String },
    Rejected { comment: String },
    Escalated { note: String },
}

/// Waits for an `Approval` event; escalates when it does not come in time.
#[derive(Debug)]
pub struct HumanInteraction;
impl Orchestration for HumanInteraction {
    const NAME: &'static str = "HumanInteraction";
    type Input = ApprovalRequest;
    type Output = ApprovalOutcome;
    fn validate(input: &ApprovalRequest) -> Result<(), String> {
        if input.timeout_ms > MAX_WAIT_MS {
            return Err(format!(
                "timeout_ms must be at most {MAX_WAIT_MS}, not {}",
                input.timeout_ms
            ));
        }
        Ok(())
    }
    async fn run(
        ctx: OrchestrationContext,
        input: ApprovalRequest,
    ) -> Result<ApprovalOutcome, Failure> {
        let approval = std::pin::pin!(ctx.wait_for_event::<Approval>("Approval"));
        let timeout = std::pin::pin!(ctx.sleep(Duration::from_millis(input.timeout_ms)));
        match select(approval, timeout).await {
            Either::Left((approval, _)) => {
                let approval = approval?;
                Ok(if approval.approved {
                    ApprovalOutcome::Approved {
                        comment: approval.comment,
                    }
                } else {
                    ApprovalOutcome::Rejected {
                        comment: approval.comment,
                    }
                })
            }
            Either::Right(_) => {
                let note = ctx.call_activity::<Escalate>(&input.request).await?;
                Ok(ApprovalOutcome::Escalated { note })
            }
        }
    }
}

/// A registry with every sample.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.orchestration::<HelloSequence>()
        .orchestration::<HelloN>()
        .orchestration::<FanOutFanIn>()
        .orchestration::<Monitor>()
        .orchestration::<HumanInteraction>()
        .activity(SayHello)
        .activity(Square)
        .activity(CheckJob)
        .activity(Escalate);
    r
}
