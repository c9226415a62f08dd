//! Resilience primitives in the runtime, on a manual clock: a breaker that opens fails calls
//! fast and the retry waits for its half-open time; a limiter admits at its rate, in order, and
//! refuses past its longest wait; a concurrency limit holds, without starving other activities;
//! the intake refuses starts with a retry-after; singletons; published snapshots; and the shared
//! limiter's store contract on SQLite and PostgreSQL.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use engine::{
    ActivityContext, ActivityOptions, Client, ClientError, Clock, Failure, ManualClock,
    OrchestrationContext, Runtime, RuntimeOptions, RuntimeStatus, SqliteStore, StartOptions,
    orchestration,
    resilience::{
        breaker::{BreakerConfig, Window},
        config::LimiterConfig,
        gcra::{Decision, Gcra},
        view::{BreakerAction, BreakerStatus},
    },
    runtime::resilience::Limiter,
    samples::{
        self, Approval, ApprovalRequest, BURST_LIMITER, FLAKY_BREAKER, FlakyCalls, FlakyOutcome,
        HelloSequence, HumanInteraction, LimiterBurst,
    },
    store::{ResilienceStore, Store, postgres::PgResilience},
};

use crate::runtime::{clocked_runtime, manual_clock, open};

const WAIT: Duration = Duration::from_secs(30);

/// Polls `check` (real time, for the runtime's progress; the clock does not move) until it holds.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn breaker(client: &Client<SqliteStore>, name: &str) -> engine::resilience::view::BreakerView {
    client
        .resilience()
        .breakers
        .into_iter()
        .find(|b| b.name == name)
        .unwrap()
}

fn limiter(client: &Client<SqliteStore>, name: &str) -> engine::resilience::view::LimiterView {
    client
        .resilience()
        .limiters
        .into_iter()
        .find(|l| l.name == name)
        .unwrap()
}

/// The only test that sets the flaky sample's failure rate (a process-wide setting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_fails_calls_fast_and_the_retry_waits_for_its_half_open_time() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, client, store, clock) = clocked_runtime(dir.path(), samples::registry()).await;
    samples::set_flaky_failure_percent(100);
    let id = client
        .start::<FlakyCalls>(&10, StartOptions::default())
        .await
        .unwrap();
    // Ten calls fail: 10 of the last 20 at 100 % trips the breaker (minimum 10, 50 %).
    until("ten failed calls", || {
        breaker(&client, FLAKY_BREAKER).failed == 10
    })
    .await;
    let open = breaker(&client, FLAKY_BREAKER);
    assert_eq!(open.status, BreakerStatus::Open);
    assert_eq!(open.transitions.len(), 1);
    assert!(
        open.transitions[0].cause.contains("failure rate"),
        "{open:?}"
    );
    let opened_at = clock.now_ms();
    // The retries, one second later, are refused without calling the dependency.
    let retry = store.next_timer_at(clock.now_ms()).await.unwrap().unwrap();
    clock.advance_to(retry);
    until("ten rejected retries", || {
        breaker(&client, FLAKY_BREAKER).rejected == 10
    })
    .await;
    let refused = breaker(&client, FLAKY_BREAKER);
    assert_eq!(
        (refused.succeeded, refused.failed),
        (0, 10),
        "no call reached it"
    );
    let half_open_in = refused.half_open_in_ms.unwrap();
    assert!(
        half_open_in > 13_000 && half_open_in <= 15_000,
        "{refused:?}"
    );
    // Their next attempt waits for the half-open time (the failure's retry-after), not the
    // policy's 2 s backoff.
    let next = store.next_timer_at(clock.now_ms()).await.unwrap().unwrap();
    assert!(
        next >= opened_at + 15_000,
        "retried {} ms after opening",
        next - opened_at
    );
    // The dependency recovers; the probes find it well and the breaker closes.
    samples::set_flaky_failure_percent(0);
    clock.advance_to(next);
    let done = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(done.status, RuntimeStatus::Completed, "{done:?}");
    let outcome: FlakyOutcome = serde_json::from_str(done.output.as_deref().unwrap()).unwrap();
    assert!(
        outcome.served >= 3,
        "at least the probes got through: {outcome:?}"
    );
    let closed = breaker(&client, FLAKY_BREAKER);
    let path: Vec<_> = closed.transitions.iter().map(|t| (t.from, t.to)).collect();
    assert_eq!(
        path,
        [
            (BreakerStatus::Closed, BreakerStatus::Open),
            (BreakerStatus::Open, BreakerStatus::HalfOpen),
            (BreakerStatus::HalfOpen, BreakerStatus::Closed),
        ]
    );
    // An operator's verbs, with the reason on the transition.
    let forced = client
        .act_on_breaker(
            FLAKY_BREAKER,
            BreakerAction::ForceOpen,
            "maintenance window",
        )
        .unwrap();
    assert_eq!(forced.status, BreakerStatus::ForcedOpen);
    assert!(
        forced
            .transitions
            .last()
            .unwrap()
            .cause
            .contains("maintenance window"),
        "{forced:?}"
    );
    let reset = client
        .act_on_breaker(FLAKY_BREAKER, BreakerAction::Reset, "done")
        .unwrap();
    assert_eq!(reset.status, BreakerStatus::Closed);
    assert!(matches!(
        client.act_on_breaker("nope", BreakerAction::Reset, ""),
        Err(ClientError::UnknownPrimitive { .. })
    ));
    samples::set_flaky_failure_percent(10);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limiter_admits_at_its_rate_in_order_and_refuses_past_its_longest_wait() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = samples::registry();
    // One per second, bursts of 2, waiting at most 3 s.
    registry.limiter(
        BURST_LIMITER,
        LimiterConfig::gcra(1, Duration::from_secs(1), 2).max_wait(Duration::from_secs(3)),
    );
    let (rt, client, _store, clock) = clocked_runtime(dir.path(), registry).await;
    let id = client
        .start::<LimiterBurst>(&6, StartOptions::default())
        .await
        .unwrap();
    until("the burst admitted and the rest waiting", || {
        let l = limiter(&client, BURST_LIMITER);
        l.admitted == 2 && l.waiters == 4
    })
    .await;
    for admitted in [3, 4, 5] {
        clock.advance(Duration::from_secs(1));
        until("one more admitted per second", || {
            limiter(&client, BURST_LIMITER).admitted == admitted
        })
        .await;
    }
    // The sixth would pass only at 4 s, past its 3 s wait: refused, with a retry-after.
    let done = client.wait_for_completion(&id, WAIT).await.unwrap();
    let passed: u32 = serde_json::from_str(done.output.as_deref().unwrap()).unwrap();
    assert_eq!(passed, 5);
    let l = limiter(&client, BURST_LIMITER);
    assert_eq!((l.admitted, l.refused, l.waiters), (5, 1, 0));
    let charted: u32 = l.per_second.iter().map(|s| s.admitted).sum();
    assert_eq!(charted, 5, "{:?}", l.per_second);
    let history = client.history(&id).await.unwrap();
    let refusal = history
        .iter()
        .find_map(|e| match &e.kind {
            engine::EventKind::TaskFailed { failure, .. } => Some(failure.clone()),
            _ => None,
        })
        .expect("one call failed");
    assert_eq!(refusal.error_type, engine::resilience::RATE_LIMITED);
    assert!(refusal.retry_after_ms.unwrap() >= 1_000, "{refusal:?}");
    rt.shutdown().await;
}

/// How many [`Held`] calls run now, and the most seen at once.
static HELD_NOW: AtomicU32 = AtomicU32::new(0);
static HELD_MAX: AtomicU32 = AtomicU32::new(0);
static HELD_GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);

/// Holds until the test opens the gate; at most 2 at once.
struct Held;
impl engine::Activity for Held {
    const NAME: &'static str = "Held";
    type Input = u32;
    type Output = u32;
    const OPTIONS: ActivityOptions = ActivityOptions {
        concurrency: Some(2),
        ..ActivityOptions::NONE
    };
    async fn run(&self, _: ActivityContext, n: u32) -> Result<u32, Failure> {
        let now = HELD_NOW.fetch_add(1, Ordering::SeqCst) + 1;
        HELD_MAX.fetch_max(now, Ordering::SeqCst);
        HELD_GATE.acquire().await.unwrap().forget();
        HELD_NOW.fetch_sub(1, Ordering::SeqCst);
        Ok(n)
    }
}

#[orchestration]
async fn hold_many(ctx: OrchestrationContext, n: u32) -> Result<u32, Failure> {
    let calls: Vec<_> = (0..n).map(|i| ctx.call_activity::<Held>(&i)).collect();
    let done = engine::try_when_all(calls).await?;
    Ok(done.len() as u32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrency_limit_holds_without_starving_other_activities() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = samples::registry();
    registry.orchestration::<HoldMany>().activity(Held);
    let options = RuntimeOptions {
        activity_concurrency: 4,
        ..RuntimeOptions::default()
    };
    let rt = Runtime::start(open(dir.path()).await, registry, options);
    let client = rt.client();
    let id = client
        .start::<HoldMany>(&10, StartOptions::default())
        .await
        .unwrap();
    let view = || {
        client
            .resilience()
            .concurrency
            .into_iter()
            .find(|c| c.activity == "Held")
            .unwrap()
    };
    until("two held, eight waiting", || {
        let c = view();
        c.in_flight == 2 && c.waiting == 8
    })
    .await;
    // Eight calls wait for their limit, not in the four worker slots: others still run.
    let hello = client
        .start::<HelloSequence>(&vec!["a".into(), "b".into()], StartOptions::default())
        .await
        .unwrap();
    let greeted = client.wait_for_completion(&hello, WAIT).await.unwrap();
    assert_eq!(greeted.status, RuntimeStatus::Completed);
    HELD_GATE.add_permits(10);
    let done = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(done.output.as_deref(), Some("10"));
    assert_eq!(HELD_MAX.load(Ordering::SeqCst), 2);
    rt.shutdown().await;
}

fn approval() -> ApprovalRequest {
    ApprovalRequest {
        request: "expense".into(),
        timeout: Duration::from_secs(3600),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_intake_refuses_starts_with_a_retry_after_and_singletons_start_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let clock = manual_clock();
    let options = RuntimeOptions {
        max_live_instances: Some(2),
        process_name: Some("test-process".into()),
        ..RuntimeOptions::default()
    };
    let rt = Runtime::start_with_clock(store, samples::registry(), options, clock.clone());
    let client = rt.client();
    let first = client
        .start_singleton::<HumanInteraction>("nightly-report", &approval(), BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(first, "nightly-report");
    // A second start of the singleton while it is live: a conflict naming it.
    match client
        .start_singleton::<HumanInteraction>("nightly-report", &approval(), BTreeMap::new())
        .await
    {
        Err(ClientError::Conflict(id)) => assert_eq!(id, "nightly-report"),
        other => panic!("expected a conflict, got {other:?}"),
    }
    client
        .start::<HumanInteraction>(&approval(), StartOptions::default())
        .await
        .unwrap();
    // Two live: the third start is refused at once, with when to come back.
    match client
        .start::<HumanInteraction>(&approval(), StartOptions::default())
        .await
    {
        Err(ClientError::Overloaded {
            max,
            retry_after_secs,
        }) => {
            assert_eq!(max, 2);
            assert!((1..=60).contains(&retry_after_secs));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(client.resilience().intake.refused, 1);
    // The singleton finishes; once the intake has seen it go, the key starts afresh.
    client
        .raise_event(
            "nightly-report",
            &Approval {
                approved: true,
                comment: String::new(),
            },
        )
        .await
        .unwrap();
    client
        .wait_for_completion("nightly-report", WAIT)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    until("the intake refreshed", || {
        client.resilience().intake.live == 1
    })
    .await;
    client
        .start_singleton::<HumanInteraction>("nightly-report", &approval(), BTreeMap::new())
        .await
        .unwrap();
    // The snapshot this process published names it and its primitives.
    let published = client.published_resilience(0).await.unwrap();
    let mine = published
        .iter()
        .find(|p| p.process == "test-process")
        .expect("published");
    assert!(mine.breakers.iter().any(|b| b.name == FLAKY_BREAKER));
    assert!(mine.limiters.iter().any(|l| l.name == BURST_LIMITER));
    assert_eq!(mine.intake.max, Some(2));
    rt.shutdown().await;
}

/// The shared limiter's contract, for any store: decisions are the engine's GCRA on the stored
/// TAT; a refusal changes nothing; two limiters (two processes) on one store together stay
/// within burst + rate × time, leasing in chunks (one write per chunk).
async fn shared_budget_contract(store: Arc<dyn ResilienceStore>, name: &str) {
    let gcra = Gcra::new(100, Duration::from_secs(1), 20).unwrap();
    let t0: u64 = 1_700_000_000_000_000_000;
    assert_eq!(
        store.take_budget(name, gcra, 20, t0).await.unwrap(),
        Decision::Allowed { remaining: 0 }
    );
    let Decision::Denied { retry_after } = store.take_budget(name, gcra, 10, t0).await.unwrap()
    else {
        panic!("the burst is spent");
    };
    assert_eq!(retry_after, 100_000_000, "ten intervals of 10 ms");
    // The refusal changed nothing: at the retry-after it passes.
    assert!(matches!(
        store
            .take_budget(name, gcra, 10, t0 + retry_after)
            .await
            .unwrap(),
        Decision::Allowed { .. }
    ));
    assert_eq!(
        store.take_budget(name, gcra, 21, t0).await.unwrap(),
        Decision::Insufficient
    );

    // Two processes' limiters on one budget: 200 per second, bursts of 50, chunks of 25.
    let shared = format!("{name}-two");
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let config = LimiterConfig::gcra(200, Duration::from_secs(1), 50)
        .shared(25)
        .max_wait(Duration::ZERO);
    let one = Limiter::new(&shared, config, clock.clone(), Some(store.clone())).unwrap();
    let two = Limiter::new(&shared, config, clock.clone(), Some(store.clone())).unwrap();
    let mut admitted = [0u64; 2];
    // Ten simulated seconds, each process asking 5 times every millisecond (far above the rate).
    for _ in 0..10_000 {
        clock.advance(Duration::from_millis(1));
        for (i, limiter) in [&one, &two].into_iter().enumerate() {
            for _ in 0..5 {
                if limiter.acquire().await.is_ok() {
                    admitted[i] += 1;
                }
            }
        }
    }
    let total = admitted[0] + admitted[1];
    let (bound, floor) = (50 + 200 * 10, 200 * 10 - 2 * 25);
    assert!(
        total <= bound && total >= floor,
        "admitted {admitted:?}, {total} in all; expected {floor}..={bound}"
    );
    assert!(
        admitted.iter().all(|&a| a > 0),
        "both got budget: {admitted:?}"
    );
    let writes = one.view().store_writes + two.view().store_writes;
    assert!(
        writes * 25 <= total + 50,
        "{writes} writes for {total} admissions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_budgets_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ResilienceStore> = Arc::new(open(dir.path()).await);
    shared_budget_contract(store, "api").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL; `cargo xtask test` provides it"]
async fn shared_budgets_on_postgres() {
    let url: engine::DatabaseUrl = std::env::var("SWITCHYARD_TEST_POSTGRES_URL")
        .expect("SWITCHYARD_TEST_POSTGRES_URL is not set: run `cargo xtask test`")
        .parse()
        .unwrap();
    let db = engine::Database::connect(&url, &engine::db::ConnectOptions::default())
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let engine::Database::Postgres(pool) = db else {
        panic!("not a PostgreSQL URL");
    };
    let store: Arc<dyn ResilienceStore> = Arc::new(PgResilience::new(pool));
    // A name of its own, so earlier runs on the same database do not interfere.
    let name = format!("api-{}", engine::SystemClock.now_ms());
    shared_budget_contract(store, &name).await;
}

#[test]
fn an_activity_naming_an_unregistered_breaker_is_refused_at_start() {
    let mut registry = engine::Registry::new();
    registry.activity(samples::CallFlaky);
    let err = registry.check_resilience().unwrap_err();
    assert!(err.contains("flaky-dependency"), "{err}");
    registry.breaker(
        FLAKY_BREAKER,
        BreakerConfig {
            window: Window::Count(10),
            ..BreakerConfig::default()
        },
    );
    assert!(registry.check_resilience().is_ok());
}

static SLOW_RUNS: AtomicU32 = AtomicU32::new(0);
static SLOW_GATE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(0);

/// Runs until the test opens the gate, counting its runs.
struct Slow;
impl engine::Activity for Slow {
    const NAME: &'static str = "Slow";
    type Input = ();
    type Output = ();
    async fn run(&self, _: ActivityContext, (): ()) -> Result<(), Failure> {
        SLOW_RUNS.fetch_add(1, Ordering::SeqCst);
        SLOW_GATE.acquire().await.unwrap().forget();
        Ok(())
    }
}

#[orchestration]
async fn call_slow(ctx: OrchestrationContext, (): ()) -> Result<(), Failure> {
    ctx.call_activity::<Slow>(&()).await
}

/// An activity that outlives the eager window (waiting for a limiter, say) gets its row from
/// its schedule's commit while it runs; the workers' sweep finds that row leased to this runtime
/// and must not run it a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eager_activity_outliving_its_window_is_not_run_again_by_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let mut registry = samples::registry();
    registry.orchestration::<CallSlow>().activity(Slow);
    let (rt, client, _store, clock) = clocked_runtime(dir.path(), registry).await;
    let id = client
        .start::<CallSlow>(&(), StartOptions::default())
        .await
        .unwrap();
    until("running", || SLOW_RUNS.load(Ordering::SeqCst) == 1).await;
    // Past a renewal (a third of the 30 s lease) and a sweep (half of it).
    for _ in 0..4 {
        clock.advance(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    SLOW_GATE.add_permits(1);
    let done = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(done.status, RuntimeStatus::Completed);
    assert_eq!(SLOW_RUNS.load(Ordering::SeqCst), 1, "run once");
    rt.shutdown().await;
}
