//! Sample orchestrations of the classic patterns, used by tests, the benchmark and the server so
//! a fresh install has something real to run. Each is written with the attribute macros, as a
//! user would write it, and is no longer than its C# Durable Functions counterpart.
//!
//! - [`HelloSequence`]: function chaining (`SayHello` once per name, in order); [`HelloN`] is the
//!   benchmark's hello-N.
//! - [`FanOutFanIn`]: n parallel `Square` calls, summed.
//! - [`Monitor`]: polls `CheckJob` with exponential backoff through continue-as-new, stopping when
//!   the job is done or the deadline passes.
//! - [`HumanInteraction`]: waits for an [`Approval`] event with a timeout; on timeout it calls
//!   `Escalate`.
//! - [`Counter`]: an entity, the aggregator pattern (many signals, one state): `add` and
//!   `reset`, written with `#[entity]`.
//! - [`Account`] and [`Transfer`]: bank accounts as entities, and a transfer that locks both
//!   accounts (a critical section), checks the balance, and moves the money with two calls.
//!
//! - [`FlakyCalls`]: calls [`CallFlaky`], a dependency that fails a settable share of calls
//!   ([`set_flaky_failure_percent`]), through the [`FLAKY_BREAKER`] circuit breaker with a retry
//!   policy that waits out the open breaker; [`LimiterBurst`] sends a burst of [`LimitedCall`]s
//!   through the [`BURST_LIMITER`] rate limiter. Their primitives are registered with them.
//!
//! Each validates its input ([`Orchestration::validate`](crate::Orchestration::validate)): sizes
//! and waits are bounded ([`MAX_NAMES`], [`MAX_HELLO_STEPS`], [`MAX_FAN_OUT`], [`MAX_WAIT`]), so a
//! start with an absurd input is refused with a message instead of exhausting memory or
//! overflowing.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::{
    ActivityContext, Event, Failure, OrchestrationContext, Registry, activity, entity,
    entity::{EntityContext, EntityKey},
    history::TimestampMs,
    orchestration, try_when_all,
};

/// Most names [`HelloSequence`] greets in one instance.
pub const MAX_NAMES: usize = 1_000;
/// Most sequential calls [`HelloN`] makes.
pub const MAX_HELLO_STEPS: u32 = 1_000;
/// Most parallel calls [`FanOutFanIn`] makes (each is a stored activity and two history events).
pub const MAX_FAN_OUT: u64 = 10_000;
/// Longest wait the monitor and the approval sample accept: one year.
pub const MAX_WAIT: Duration = Duration::from_secs(366 * 24 * 3600);

/// Greets one name.
#[activity]
pub async fn say_hello(_: ActivityContext, name: String) -> Result<String, Failure> {
    Ok(format!("Hello, {name}!"))
}

/// Squares a number.
#[activity]
pub async fn square(_: ActivityContext, n: u64) -> Result<u64, Failure> {
    n.checked_mul(n)
        .ok_or_else(|| Failure::new("Overflow", format!("{n} squared does not fit in 64 bits")))
}

/// Function chaining: greets each name in turn.
#[orchestration(validate = at_most_max_names)]
pub async fn hello_sequence(
    ctx: OrchestrationContext,
    names: Vec<String>,
) -> Result<Vec<String>, Failure> {
    let mut greetings = Vec::with_capacity(names.len());
    for name in &names {
        greetings.push(ctx.call_activity::<SayHello>(name).await?);
    }
    Ok(greetings)
}

fn at_most_max_names(names: &[String]) -> Result<(), String> {
    bounded("names", names.len() as u64, MAX_NAMES as u64)
}

/// hello-N: n sequential `SayHello` calls (the benchmark's workload).
#[orchestration(validate = at_most_max_steps)]
pub async fn hello_n(ctx: OrchestrationContext, n: u32) -> Result<u32, Failure> {
    for i in 0..n {
        ctx.call_activity::<SayHello>(&i.to_string()).await?;
    }
    Ok(n)
}

fn at_most_max_steps(n: &u32) -> Result<(), String> {
    bounded("calls", u64::from(*n), u64::from(MAX_HELLO_STEPS))
}

/// Fan-out/fan-in: squares 1..=n in parallel and sums the results.
#[orchestration(validate = at_most_max_fan_out)]
pub async fn fan_out_fan_in(ctx: OrchestrationContext, n: u64) -> Result<u64, Failure> {
    let calls = (1..=n).map(|i| ctx.call_activity::<Square>(&i));
    let squares = try_when_all(calls).await?;
    Ok(squares.into_iter().fold(0, u64::saturating_add))
}

fn at_most_max_fan_out(n: &u64) -> Result<(), String> {
    bounded("parallel calls", *n, MAX_FAN_OUT)
}

/// `Err` when `count` is over `limit`.
fn bounded(what: &str, count: u64, limit: u64) -> Result<(), String> {
    if count > limit {
        return Err(format!("makes at most {limit} {what}, not {count}"));
    }
    Ok(())
}

/// What [`CheckJob`] is asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobCheck {
    pub job_id: String,
    pub check: u32,
    /// The sample job is done from this check on; never when absent.
    pub ready_after: Option<u32>,
}

/// Reports whether a job is done. The sample job is done from its `ready_after`-th check on.
#[activity]
pub async fn check_job(_: ActivityContext, job: JobCheck) -> Result<bool, Failure> {
    Ok(job.ready_after.is_some_and(|ready| job.check >= ready))
}

/// The monitor's state, carried from one execution to the next. In JSON the durations are
/// milliseconds: `{"job_id": "j", "interval_ms": 1000, "max_interval_ms": 60000,
/// "timeout_ms": 3600000}`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct MonitorInput {
    #[schemars(example = &"nightly-export")]
    pub job_id: String,
    /// Checks done so far.
    #[serde(default)]
    pub checks: u32,
    /// The sample job is done from this check on; never when absent.
    #[serde(default)]
    pub ready_after: Option<u32>,
    #[serde(rename = "interval_ms", with = "crate::millis")]
    #[schemars(with = "u64", example = 1_000)]
    pub interval: Duration,
    #[serde(rename = "max_interval_ms", with = "crate::millis")]
    #[schemars(with = "u64", example = 60_000)]
    pub max_interval: Duration,
    /// How long to keep polling, from the first check.
    #[serde(rename = "timeout_ms", with = "crate::millis")]
    #[schemars(with = "u64", example = 600_000)]
    pub timeout: Duration,
    /// When to give up (ms since the epoch); set by the first execution from `timeout`.
    #[serde(default)]
    pub deadline_ms: Option<TimestampMs>,
}

/// The monitor's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MonitorOutcome {
    Done { checks: u32 },
    TimedOut { checks: u32 },
}

/// An eternal monitor: check, back off, continue as new; stop when done or past the deadline.
/// Continue-as-new keeps each execution's history to one check, however long it polls.
#[orchestration(validate = valid_monitor)]
pub async fn monitor(
    ctx: OrchestrationContext,
    mut input: MonitorInput,
) -> Result<MonitorOutcome, Failure> {
    let deadline = *input
        .deadline_ms
        .get_or_insert_with(|| ctx.now_ms().saturating_add(millis(input.timeout)));
    input.checks = input.checks.saturating_add(1);
    let check = JobCheck {
        job_id: input.job_id.clone(),
        check: input.checks,
        ready_after: input.ready_after,
    };
    let done = ctx.call_activity::<CheckJob>(&check).await?;
    let status =
        serde_json::json!({ "checks": input.checks, "interval_ms": millis(input.interval) });
    ctx.set_custom_status(&status);
    let checks = input.checks;
    if done {
        return Ok(MonitorOutcome::Done { checks });
    }
    if ctx.now_ms().saturating_add(millis(input.interval)) > deadline {
        return Ok(MonitorOutcome::TimedOut { checks });
    }
    ctx.sleep(input.interval).await;
    input.interval = input.interval.saturating_mul(2).min(input.max_interval);
    ctx.continue_as_new(&input).await
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn valid_monitor(input: &MonitorInput) -> Result<(), String> {
    let ms = |d: Duration| d.as_millis();
    if input.interval.is_zero() || input.interval > MAX_WAIT {
        return Err(format!(
            "interval_ms must be between 1 and {}, not {}",
            ms(MAX_WAIT),
            ms(input.interval)
        ));
    }
    if input.max_interval < input.interval || input.max_interval > MAX_WAIT {
        return Err(format!(
            "max_interval_ms must be between interval_ms and {}, not {}",
            ms(MAX_WAIT),
            ms(input.max_interval)
        ));
    }
    valid_wait("timeout_ms", input.timeout)?;
    if input.job_id.len() > 256 {
        return Err("job_id must be at most 256 bytes".into());
    }
    Ok(())
}

fn valid_wait(what: &str, wait: Duration) -> Result<(), String> {
    if wait > MAX_WAIT {
        return Err(format!(
            "{what} must be at most {}, not {}",
            MAX_WAIT.as_millis(),
            wait.as_millis()
        ));
    }
    Ok(())
}

/// Notifies a manager that an approval timed out.
#[activity]
pub async fn escalate(_: ActivityContext, request: String) -> Result<String, Failure> {
    Ok(format!("escalated {request} to a manager"))
}

/// An approval request: `{"request": "expense #1", "timeout_ms": 60000}`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ApprovalRequest {
    #[schemars(example = &"new laptop")]
    pub request: String,
    #[serde(rename = "timeout_ms", with = "crate::millis")]
    #[schemars(with = "u64", example = 600_000)]
    pub timeout: Duration,
}

/// The event that answers an approval; the approvals inbox raises it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Approval {
    pub approved: bool,
    #[serde(default)]
    pub comment: String,
}

impl Event for Approval {
    const NAME: &'static str = "Approval";
}

/// The approval's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApprovalOutcome {
    Approved { comment: String },
    Rejected { comment: String },
    Escalated { note: String },
}

/// Waits for an [`Approval`]; escalates when it does not come in time.
#[orchestration(validate = valid_request)]
pub async fn human_interaction(
    ctx: OrchestrationContext,
    input: ApprovalRequest,
) -> Result<ApprovalOutcome, Failure> {
    let answer = ctx
        .wait_for_event_timeout::<Approval>(input.timeout)
        .await?;
    Ok(match answer {
        Some(a) if a.approved => ApprovalOutcome::Approved { comment: a.comment },
        Some(a) => ApprovalOutcome::Rejected { comment: a.comment },
        None => {
            let note = ctx.call_activity::<Escalate>(&input.request).await?;
            ApprovalOutcome::Escalated { note }
        }
    })
}

fn valid_request(input: &ApprovalRequest) -> Result<(), String> {
    valid_wait("timeout_ms", input.timeout)
}

/// A registry with every sample.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.orchestration::<HelloSequence>()
        .orchestration::<HelloN>()
        .orchestration::<FanOutFanIn>()
        .orchestration::<Monitor>()
        .orchestration::<HumanInteraction>()
        .orchestration::<Transfer>()
        .activity(SayHello)
        .activity(Square)
        .activity(CheckJob)
        .activity(Escalate)
        .entity(Counter::operations())
        .entity(Account::operations());
    resilience_samples(&mut r);
    describe_inputs(&mut r);
    r
}

/// Records every sample's input schema (derived from its Rust type) for the Start page.
fn describe_inputs(r: &mut Registry) {
    use crate::schema::{describe, describe_with_example};
    use serde_json::json;
    describe_with_example::<HelloSequence>(r, json!(["Ada", "Grace"]));
    describe_with_example::<HelloN>(r, json!(5));
    describe_with_example::<FanOutFanIn>(r, json!(10));
    describe::<Monitor>(r);
    describe::<HumanInteraction>(r);
    describe::<Transfer>(r);
    describe_with_example::<FlakyCalls>(r, json!(20));
    describe_with_example::<LimiterBurst>(r, json!(20));
}

/// The circuit breaker [`CallFlaky`] goes through: the last 20 calls, tripping at 50 % failures
/// once 10 are in, open for 15 s, then 3 probes.
pub const FLAKY_BREAKER: &str = "flaky-dependency";
/// The rate limiter [`LimitedCall`] goes through: GCRA, 5 per second, bursts of 5, waits up to
/// 10 s.
pub const BURST_LIMITER: &str = "burst-limiter";
/// Most calls one [`FlakyCalls`] or [`LimiterBurst`] makes.
pub const MAX_RESILIENCE_CALLS: u32 = 1_000;

/// Registers the resilience samples and their breaker and limiter.
pub fn resilience_samples(r: &mut Registry) {
    use crate::resilience::{
        breaker::{BreakerConfig, Window},
        config::LimiterConfig,
    };
    r.orchestration::<FlakyCalls>()
        .orchestration::<LimiterBurst>()
        .activity(CallFlaky)
        .activity(LimitedCall)
        .breaker(
            FLAKY_BREAKER,
            BreakerConfig {
                window: Window::Count(20),
                minimum_calls: 10,
                failure_rate_threshold: 50.0,
                slow_call_duration: Some(2_000_000_000),
                slow_call_rate_threshold: 100.0,
                consecutive_failures: None,
                open_wait: 15_000_000_000,
                half_open_permits: 3,
            },
        )
        .limiter(
            BURST_LIMITER,
            LimiterConfig::gcra(5, Duration::from_secs(1), 5).max_wait(Duration::from_secs(10)),
        );
}

/// The share of [`CallFlaky`] calls that fail, in percent: the dependency's health, set from
/// the dashboard or the API (process-wide, as an outside dependency's health would be).
static FLAKY_FAILURE_PERCENT: AtomicU32 = AtomicU32::new(10);

/// Sets how many percent of [`CallFlaky`] calls fail (clamped to 100).
pub fn set_flaky_failure_percent(percent: u32) {
    FLAKY_FAILURE_PERCENT.store(percent.min(100), Ordering::Relaxed);
}

/// How many percent of [`CallFlaky`] calls fail now.
pub fn flaky_failure_percent() -> u32 {
    FLAKY_FAILURE_PERCENT.load(Ordering::Relaxed)
}

/// A call to a dependency that fails [`flaky_failure_percent`] of the time. Which calls fail is
/// decided by a hash of the call's identity, so a given call fails or succeeds alike on every
/// delivery at one setting.
#[activity(breaker = "flaky-dependency")]
pub async fn call_flaky(ctx: ActivityContext, request: u32) -> Result<String, Failure> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ctx
        .instance_id
        .bytes()
        .chain(ctx.scheduled_id.to_le_bytes())
        .chain(request.to_le_bytes())
    {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    if (hash % 100) < u64::from(flaky_failure_percent()) {
        return Err(Failure::new(
            "DependencyFailed",
            format!("the flaky dependency failed request {request}"),
        ));
    }
    Ok(format!("request {request} served"))
}

/// A call through the [`BURST_LIMITER`]; returns its number.
#[activity(limiter = "burst-limiter")]
pub async fn limited_call(_: ActivityContext, n: u32) -> Result<u32, Failure> {
    Ok(n)
}

/// What [`FlakyCalls`] saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlakyOutcome {
    pub served: u32,
    pub failed: u32,
}

/// `calls` calls to the flaky dependency at once, each retried (up to 3 attempts, at least 1 s
/// apart, longer while the breaker is open: its retry-after) before it counts as failed.
#[orchestration(validate = at_most_max_calls)]
pub async fn flaky_calls(ctx: OrchestrationContext, calls: u32) -> Result<FlakyOutcome, Failure> {
    let policy = crate::RetryPolicy::new(3, Duration::from_secs(1));
    let results = crate::when_all(
        (0..calls)
            .map(|n| ctx.call_activity_with_retry::<CallFlaky>(&n, &policy))
            .collect::<Vec<_>>(),
    )
    .await;
    let served = results.iter().filter(|r| r.is_ok()).count() as u32;
    Ok(FlakyOutcome {
        served,
        failed: calls - served,
    })
}

/// `calls` calls through the burst limiter at once: they pass at its rate; any it cannot admit
/// within its longest wait fail as `RateLimited`. Returns how many passed.
#[orchestration(validate = at_most_max_calls)]
pub async fn limiter_burst(ctx: OrchestrationContext, calls: u32) -> Result<u32, Failure> {
    let results = crate::when_all(
        (0..calls)
            .map(|n| ctx.call_activity::<LimitedCall>(&n))
            .collect::<Vec<_>>(),
    )
    .await;
    Ok(results.iter().filter(|r| r.is_ok()).count() as u32)
}

fn at_most_max_calls(calls: &u32) -> Result<(), String> {
    if *calls == 0 || *calls > MAX_RESILIENCE_CALLS {
        return Err(format!(
            "calls must be between 1 and {MAX_RESILIENCE_CALLS}, not {calls}"
        ));
    }
    Ok(())
}

/// The aggregator pattern: many signals, one state.
///
/// Requests are typed by the key: an operation of another entity type does not compile.
///
/// ```compile_fail
/// use engine::{entity::EntityKey, samples::{Account, Counter}};
/// let account = EntityKey::<Account>::new("alice").unwrap();
/// let _ = Counter::add(&account, 5); // a counter's operation on an account's key
/// ```
///
/// ```
/// use engine::{entity::EntityKey, samples::Counter};
/// let counter = EntityKey::<Counter>::new("visits").unwrap();
/// let request = Counter::add(&counter, 5);
/// assert_eq!(request.key().id().to_string(), "@counter@visits");
/// ```
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub value: i64,
}

#[entity]
impl Counter {
    /// Adds to a counter; fails (and is undone) if the sum would overflow. Returns the sum.
    pub fn add(&mut self, _ctx: &mut EntityContext, amount: i64) -> Result<i64, Failure> {
        self.value = self
            .value
            .checked_add(amount)
            .ok_or_else(|| Failure::new("Overflow", "the counter would overflow"))?;
        Ok(self.value)
    }

    /// Deletes a counter's state: it reads as absent until the next `add`.
    pub fn reset(&mut self, ctx: &mut EntityContext) -> Result<(), Failure> {
        ctx.delete_state();
        Ok(())
    }
}

/// A bank account. Its balance never goes below zero.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub balance: u64,
}

#[entity]
impl Account {
    /// Puts money in; returns the new balance.
    pub fn deposit(&mut self, _ctx: &mut EntityContext, amount: u64) -> Result<u64, Failure> {
        self.balance = self
            .balance
            .checked_add(amount)
            .ok_or_else(|| Failure::new("Overflow", "the balance would overflow"))?;
        Ok(self.balance)
    }

    /// Takes money out; fails (and changes nothing) when the balance is short. Returns the new
    /// balance.
    pub fn withdraw(&mut self, _ctx: &mut EntityContext, amount: u64) -> Result<u64, Failure> {
        self.balance = self.balance.checked_sub(amount).ok_or_else(|| {
            Failure::new(
                "InsufficientFunds",
                format!("the balance is {}, short of {amount}", self.balance),
            )
        })?;
        Ok(self.balance)
    }

    /// Reads the balance.
    pub fn balance(&mut self, _ctx: &mut EntityContext) -> Result<u64, Failure> {
        Ok(self.balance)
    }
}

/// A transfer between two accounts: `{"from": "alice", "to": "bob", "amount": 10}`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TransferRequest {
    #[schemars(example = &"alice")]
    pub from: String,
    #[schemars(example = &"bob")]
    pub to: String,
    #[schemars(example = 10)]
    pub amount: u64,
}

/// What a transfer did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferOutcome {
    /// Moved; the balances after it.
    Done { from_balance: u64, to_balance: u64 },
    /// Not moved: the source held less than the amount.
    Refused { balance: u64 },
}

/// Moves money between two accounts under a lock on both, so no other transfer sees the money
/// in neither or both: checks the balance, then withdraws and deposits in parallel.
#[orchestration(validate = valid_transfer)]
pub async fn transfer(
    ctx: OrchestrationContext,
    input: TransferRequest,
) -> Result<TransferOutcome, Failure> {
    let key = |k: &str| EntityKey::<Account>::new(k).map_err(|e| Failure::new("InvalidInput", e));
    let (from, to) = (key(&input.from)?, key(&input.to)?);
    let section = ctx.lock_entities(&[from.id(), to.id()]).await?;
    let balance = ctx.call_entity(Account::balance(&from)).await?;
    if balance < input.amount {
        section.release();
        return Ok(TransferOutcome::Refused { balance });
    }
    let (from_balance, to_balance) = futures_util::future::try_join(
        ctx.call_entity(Account::withdraw(&from, input.amount)),
        ctx.call_entity(Account::deposit(&to, input.amount)),
    )
    .await?;
    section.release();
    Ok(TransferOutcome::Done {
        from_balance,
        to_balance,
    })
}

/// A reproducible transfer workload for tests and benchmarks: `n` transfers among `accounts`
/// accounts named by `name(i)`, pairs in both directions and amounts from 1 to `max_amount`,
/// drawn from a xorshift64 sequence started at `seed`.
pub fn transfer_workload(
    n: usize,
    accounts: u64,
    name: impl Fn(u64) -> String,
    max_amount: u64,
    seed: u64,
) -> Vec<TransferRequest> {
    let mut state = seed.max(1);
    let mut next = move |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m.max(1)
    };
    (0..n)
        .map(|_| {
            let from = next(accounts);
            let to = (from + 1 + next(accounts - 1)) % accounts;
            TransferRequest {
                from: name(from),
                to: name(to),
                amount: 1 + next(max_amount),
            }
        })
        .collect()
}

fn valid_transfer(input: &TransferRequest) -> Result<(), String> {
    EntityKey::<Account>::new(&input.from).map_err(|e| format!("from: {e}"))?;
    EntityKey::<Account>::new(&input.to).map_err(|e| format!("to: {e}"))?;
    if input.from == input.to {
        return Err("from and to must be different accounts".into());
    }
    if input.amount == 0 {
        return Err("amount must be positive".into());
    }
    Ok(())
}
