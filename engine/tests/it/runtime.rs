//! The runtime on a real SQLite file: the samples run to completion, and every management verb
//! works and refuses what it must.

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use engine::{
    Client, ClientError, Clock, Database, DatabaseUrl, Event, ManualClock, Registry, Runtime,
    RuntimeOptions, RuntimeStatus, SqliteStore, StartOptions, SystemClock,
    db::ConnectOptions,
    samples::{
        Approval, ApprovalOutcome, ApprovalRequest, FanOutFanIn, HelloSequence, HumanInteraction,
        Monitor, MonitorInput, MonitorOutcome,
    },
    store::{InstanceQuery, InstanceRecord, SortBy, Store},
};

pub async fn open(dir: &Path) -> SqliteStore {
    open_file(&dir.join("engine.db")).await
}

/// A migrated SQLite store on `file`.
pub async fn open_file(file: &Path) -> SqliteStore {
    let url: DatabaseUrl = format!("sqlite://{}", file.display()).parse().unwrap();
    let db = Database::connect(&url, &ConnectOptions::default())
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let Database::Sqlite(pool) = db else {
        unreachable!()
    };
    SqliteStore::new(pool).await.unwrap()
}

/// A manual clock standing at the wall clock's time (stored timestamps stay plausible).
pub fn manual_clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(SystemClock.now_ms()))
}

/// The samples on a runtime whose clock moves only when the test moves it.
pub async fn clocked_runtime(
    dir: &Path,
    registry: Registry,
) -> (
    Runtime<SqliteStore>,
    Client<SqliteStore>,
    SqliteStore,
    Arc<ManualClock>,
) {
    let store = open(dir).await;
    let clock = manual_clock();
    let rt = Runtime::start_with_clock(
        store.clone(),
        registry,
        RuntimeOptions::default(),
        clock.clone(),
    );
    let client = rt.client();
    (rt, client, store, clock)
}

/// Lets `id` run to its end, moving the clock to each stored timer in turn instead of waiting
/// for it. Between moves the runtime gets up to 20 ms of real time to make progress.
pub async fn finish_by_timers(
    client: &Client<SqliteStore>,
    store: &SqliteStore,
    clock: &ManualClock,
    id: &str,
) -> InstanceRecord {
    for _ in 0..2_000 {
        match client
            .wait_for_completion(id, Duration::from_millis(20))
            .await
        {
            Ok(done) => return done,
            Err(ClientError::Timeout(_)) => {}
            Err(e) => panic!("{id}: {e}"),
        }
        if let Some(at) = store.next_timer_at(clock.now_ms()).await.unwrap() {
            clock.advance_to(at);
        }
    }
    panic!("{id} did not finish: {:?}", client.get(id).await);
}

/// The first 1,000 instances, with or without the system ones.
async fn first_thousand(client: &Client<SqliteStore>, hide_system: bool) -> Vec<InstanceRecord> {
    let query = InstanceQuery {
        page_size: 1000,
        hide_system,
        ..InstanceQuery::default()
    };
    client.query(&query).await.unwrap().instances
}

pub async fn runtime(dir: &Path) -> (Runtime<SqliteStore>, Client<SqliteStore>) {
    let rt = Runtime::start(
        open(dir).await,
        engine::samples::registry(),
        RuntimeOptions::default(),
    );
    let client = rt.client();
    (rt, client)
}

const WAIT: Duration = Duration::from_secs(30);

fn with_id(id: &str) -> StartOptions {
    StartOptions {
        instance_id: Some(id.into()),
        ..StartOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_chaining_sample_completes_with_its_history() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, client) = runtime(tmp.path()).await;
    let names: Vec<String> = ["Tokyo", "Seattle", "London", "Lagos", "Lima"]
        .map(String::from)
        .to_vec();
    let id = client
        .start::<HelloSequence>(&names, with_id("chain-1"))
        .await
        .unwrap();
    let done = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(done.status, RuntimeStatus::Completed);
    let output: Vec<String> = serde_json::from_str(done.output.as_deref().unwrap()).unwrap();
    assert_eq!(output[0], "Hello, Tokyo!");
    assert_eq!(output.len(), 5);
    let history = client.history(&id).await.unwrap();
    assert_eq!(history.len(), 24);
    assert_eq!(done.history_len, 24);
    let counts = client.status_counts().await.unwrap();
    assert_eq!(counts[&RuntimeStatus::Completed], 1);
    assert_eq!(counts[&RuntimeStatus::Running], 0);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_fan_in_of_a_thousand_activities() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, client) = runtime(tmp.path()).await;
    let id = client
        .start::<FanOutFanIn>(&1000, StartOptions::default())
        .await
        .unwrap();
    let done = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(done.status, RuntimeStatus::Completed, "{done:?}");
    let expected: u64 = (1..=1000u64).map(|i| i * i).sum();
    assert_eq!(done.output.as_deref(), Some(expected.to_string().as_str()));
    let history = client.history(&id).await.unwrap();
    let scheduled = history
        .iter()
        .filter(|e| e.kind.name() == "TaskScheduled")
        .count();
    let completed = history
        .iter()
        .filter(|e| e.kind.name() == "TaskCompleted")
        .count();
    assert_eq!((scheduled, completed), (1000, 1000));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_backs_off_through_continue_as_new_until_done_or_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, client, store, clock) = clocked_runtime(tmp.path(), engine::samples::registry()).await;
    let input = |ready_after, timeout_ms| MonitorInput {
        job_id: "job-7".into(),
        checks: 0,
        ready_after,
        interval: Duration::from_millis(20),
        max_interval: Duration::from_millis(80),
        deadline_ms: None,
        timeout: Duration::from_millis(timeout_ms),
    };
    let done_id = client
        .start::<Monitor>(&input(Some(4), 60_000), with_id("monitor-done"))
        .await
        .unwrap();
    let timeout_id = client
        .start::<Monitor>(&input(None, 300), with_id("monitor-timeout"))
        .await
        .unwrap();
    // Both are live (the clock stands still, so their timers wait): thresholds of zero flag both,
    // and the count agrees with the list, up to its cap.
    let everything = engine::store::RunawayLimits {
        history_len: 0,
        generations: 0,
        created_before: 0,
    };
    let listed = client.suspected_runaways(&everything, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        client
            .count_suspected_runaways(&everything, 10)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        client
            .count_suspected_runaways(&everything, 1)
            .await
            .unwrap(),
        1
    );
    let strict = engine::store::RunawayLimits {
        history_len: u32::MAX,
        generations: u32::MAX,
        created_before: 0,
    };
    assert_eq!(
        client.count_suspected_runaways(&strict, 10).await.unwrap(),
        0
    );
    let done = finish_by_timers(&client, &store, &clock, &done_id).await;
    let outcome: MonitorOutcome = serde_json::from_str(done.output.as_deref().unwrap()).unwrap();
    assert_eq!(outcome, MonitorOutcome::Done { checks: 4 });
    assert_eq!(done.generation, 3, "three continue-as-new hand-overs");
    // Each execution starts with an empty history.
    assert!(done.history_len < 12, "{}", done.history_len);

    let timed_out = finish_by_timers(&client, &store, &clock, &timeout_id).await;
    let outcome: MonitorOutcome =
        serde_json::from_str(timed_out.output.as_deref().unwrap()).unwrap();
    assert!(
        matches!(outcome, MonitorOutcome::TimedOut { checks } if checks >= 2),
        "{outcome:?}"
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_interaction_is_approved_or_escalates_on_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, client, store, clock) = clocked_runtime(tmp.path(), engine::samples::registry()).await;
    let approved = client
        .start::<HumanInteraction>(
            &ApprovalRequest {
                request: "expense #1".into(),
                timeout: Duration::from_secs(60),
            },
            with_id("approval-1"),
        )
        .await
        .unwrap();
    // It shows up in the inbox query with its deadline.
    let mut waiting = Vec::new();
    for _ in 0..200 {
        waiting = client.waiting_for_event(Approval::NAME, 10).await.unwrap();
        if !waiting.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].instance_id, approved);
    assert_eq!(
        client
            .count_waiting_for_event(Approval::NAME, 10)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        client.count_waiting_for_event("Other", 10).await.unwrap(),
        0
    );
    let deadline = waiting[0].waiting_deadline.unwrap();
    assert!(deadline - waiting[0].waiting_since.unwrap() >= 59_000);

    client
        .raise_event(
            &approved,
            &Approval {
                approved: true,
                comment: "ok".into(),
            },
        )
        .await
        .unwrap();
    let done = client.wait_for_completion(&approved, WAIT).await.unwrap();
    let outcome: ApprovalOutcome = serde_json::from_str(done.output.as_deref().unwrap()).unwrap();
    assert_eq!(
        outcome,
        ApprovalOutcome::Approved {
            comment: "ok".into()
        }
    );
    assert!(
        client
            .waiting_for_event(Approval::NAME, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        client
            .count_waiting_for_event(Approval::NAME, 10)
            .await
            .unwrap(),
        0
    );

    let late = client
        .start::<HumanInteraction>(
            &ApprovalRequest {
                request: "expense #2".into(),
                timeout: Duration::from_millis(150),
            },
            with_id("approval-2"),
        )
        .await
        .unwrap();
    let done = finish_by_timers(&client, &store, &clock, &late).await;
    let outcome: ApprovalOutcome = serde_json::from_str(done.output.as_deref().unwrap()).unwrap();
    assert!(
        matches!(outcome, ApprovalOutcome::Escalated { .. }),
        "{outcome:?}"
    );
    rt.shutdown().await;
}

fn approval(timeout_ms: u64) -> ApprovalRequest {
    ApprovalRequest {
        request: "r".into(),
        timeout: Duration::from_millis(timeout_ms),
    }
}

pub async fn wait_status(client: &Client<SqliteStore>, id: &str, status: RuntimeStatus) {
    for _ in 0..500 {
        match client.get(id).await {
            Ok(record) if record.status == status => return,
            Ok(_) | Err(ClientError::NotFound(_)) => {}
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{id} never reached {status}: {:?}", client.get(id).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_verbs_and_their_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, client) = runtime(tmp.path()).await;

    // start: validation and conflicts.
    let err = client
        .start_raw("NoSuchOrchestration", "{}", StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Invalid {
                what: "orchestration name",
                ..
            }
        ),
        "{err}"
    );
    let err = client
        .start_raw("HumanInteraction", "{not json", StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Invalid { what: "input", .. }),
        "{err}"
    );
    let huge = format!("\"{}\"", "x".repeat(300 * 1024));
    let err = client
        .start_raw("HumanInteraction", &huge, StartOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::PayloadTooLarge { .. }), "{err}");
    let err = client
        .start::<HumanInteraction>(&approval(60_000), with_id(""))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Invalid {
                what: "instance id",
                ..
            }
        ),
        "{err}"
    );

    let id = client
        .start::<HumanInteraction>(&approval(60_000), with_id("mgmt-1"))
        .await
        .unwrap();
    let err = client
        .start::<HumanInteraction>(&approval(60_000), with_id("mgmt-1"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Conflict(_)), "{err}");
    wait_status(&client, &id, RuntimeStatus::Running).await;

    // get / history: not found.
    assert!(matches!(
        client.get("nope").await,
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        client.history("nope").await,
        Err(ClientError::NotFound(_))
    ));

    // suspend / resume and their wrong states.
    let err = client.resume(&id, "not suspended").await.unwrap_err();
    assert!(matches!(err, ClientError::WrongState { .. }), "{err}");
    client.suspend(&id, "maintenance").await.unwrap();
    wait_status(&client, &id, RuntimeStatus::Suspended).await;
    let err = client.suspend(&id, "again").await.unwrap_err();
    assert!(matches!(err, ClientError::WrongState { .. }), "{err}");
    // An event raised while suspended waits for the resume.
    client
        .raise_event(
            &id,
            &Approval {
                approved: false,
                comment: "no".into(),
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        client.get(&id).await.unwrap().status,
        RuntimeStatus::Suspended
    );
    client.resume(&id, "done").await.unwrap();
    let done = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert!(done.output.unwrap().contains("Rejected"));

    // Verbs on a finished instance: gone.
    let late = Approval {
        approved: true,
        comment: "late".into(),
    };
    let err = client.raise_event(&id, &late).await.unwrap_err();
    assert!(matches!(err, ClientError::Gone { .. }), "{err}");
    let err = client.terminate(&id, "late", false).await.unwrap_err();
    assert!(matches!(err, ClientError::Gone { .. }), "{err}");
    assert!(matches!(
        client.raise_event_raw("nope", "x", "1").await,
        Err(ClientError::NotFound(_))
    ));
    let err = client.raise_event_raw(&id, "", "1").await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Invalid {
                what: "event name",
                ..
            }
        ),
        "{err}"
    );

    // terminate a running one.
    let t = client
        .start::<HumanInteraction>(&approval(60_000), with_id("mgmt-2"))
        .await
        .unwrap();
    client.terminate(&t, "runaway", true).await.unwrap();
    let done = client.wait_for_completion(&t, WAIT).await.unwrap();
    assert_eq!(done.status, RuntimeStatus::Terminated);
    let history = client.history(&t).await.unwrap();
    assert!(
        history
            .iter()
            .any(|e| e.kind.name() == "ExecutionTerminated")
    );

    // purge: a live one is refused, a finished one disappears.
    let live = client
        .start::<HumanInteraction>(&approval(60_000), with_id("mgmt-3"))
        .await
        .unwrap();
    let err = client.purge(&live, false).await.unwrap_err();
    assert!(matches!(err, ClientError::WrongState { .. }), "{err}");
    assert_eq!(client.purge(&t, true).await.unwrap(), 1);
    assert!(matches!(
        client.get(&t).await,
        Err(ClientError::NotFound(_))
    ));
    assert!(matches!(
        client.purge(&t, false).await,
        Err(ClientError::NotFound(_))
    ));

    // restart: same id replaces history, new id copies input.
    let again = client.restart(&id, None).await.unwrap();
    assert_eq!(again, id);
    wait_status(&client, &id, RuntimeStatus::Running).await;
    let copy = client.restart(&id, Some("mgmt-copy")).await.unwrap();
    assert_eq!(copy, "mgmt-copy");
    assert!(matches!(
        client.restart("nope", None).await,
        Err(ClientError::NotFound(_))
    ));
    let err = client.restart(&live, None).await.unwrap_err();
    assert!(matches!(err, ClientError::Conflict(_)), "{err}");

    // query: filters, sort, cursor paging.
    let mut tags = BTreeMap::new();
    tags.insert("team".to_owned(), "blue".to_owned());
    for i in 0..5 {
        client
            .start::<HelloSequence>(
                &vec![format!("n{i}")],
                StartOptions {
                    instance_id: Some(format!("q-{i}")),
                    tags: tags.clone(),
                    scheduled_start_at: None,
                },
            )
            .await
            .unwrap();
    }
    for i in 0..5 {
        client
            .wait_for_completion(&format!("q-{i}"), WAIT)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut query = InstanceQuery {
        statuses: vec![RuntimeStatus::Completed],
        name: Some("HelloSequence".into()),
        id_prefix: Some("q-".into()),
        tags: tags.clone(),
        sort: SortBy::Created,
        descending: true,
        page_size: 2,
        ..InstanceQuery::default()
    };
    loop {
        let page = client.query(&query).await.unwrap();
        assert!(page.instances.len() <= 2);
        seen.extend(page.instances.into_iter().map(|r| r.instance_id));
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["q-0", "q-1", "q-2", "q-3", "q-4"]);
    query.cursor = Some("garbage".into());
    assert!(matches!(
        client.query(&query).await,
        Err(ClientError::Invalid { what: "cursor", .. })
    ));

    // Counts are maintained, never counted: they agree with a real count.
    let counts = client.status_counts().await.unwrap();
    let total: i64 = counts.values().sum();
    let all = first_thousand(&client, false).await;
    assert_eq!(total as usize, all.len(), "{counts:?}");

    // purge by filter removes finished instances in the range.
    let removed = client
        .purge_by_filter(0, i64::MAX, &[RuntimeStatus::Completed])
        .await
        .unwrap();
    assert!(removed >= 5, "{removed}");
    assert!(matches!(
        client.get("q-0").await,
        Err(ClientError::NotFound(_))
    ));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_start_waits_until_its_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, client, store, clock) = clocked_runtime(tmp.path(), engine::samples::registry()).await;
    let now = clock.now_ms();
    let id = client
        .start::<HelloSequence>(
            &vec!["later".into()],
            StartOptions {
                instance_id: Some("scheduled".into()),
                tags: BTreeMap::new(),
                scheduled_start_at: Some(now + 400),
            },
        )
        .await
        .unwrap();
    // An ordinary start in the meantime runs to its end while the scheduled one keeps waiting.
    let other = client
        .start::<HelloSequence>(&vec!["now".into()], with_id("unscheduled"))
        .await
        .unwrap();
    client.wait_for_completion(&other, WAIT).await.unwrap();
    clock.advance(Duration::from_millis(399));
    client.wait_for_completion(&other, WAIT).await.unwrap();
    assert_eq!(
        client.get(&id).await.unwrap().status,
        RuntimeStatus::Pending
    );
    assert_eq!(store.next_timer_at(now).await.unwrap(), Some(now + 400));
    let done = finish_by_timers(&client, &store, &clock, &id).await;
    assert_eq!(done.status, RuntimeStatus::Completed);
    assert!(done.completed_at.unwrap() >= now + 400);
    rt.shutdown().await;
}

/// Fails while `FLAKY_FAILS` is set; the rewind test flips it.
static FLAKY_FAILS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

struct Flaky;
impl engine::Activity for Flaky {
    const NAME: &'static str = "Flaky";
    type Input = String;
    type Output = String;
    async fn run(
        &self,
        _: engine::ActivityContext,
        input: String,
    ) -> Result<String, engine::Failure> {
        if FLAKY_FAILS.load(std::sync::atomic::Ordering::SeqCst) {
            Err(engine::Failure::new("Unavailable", "the service is down"))
        } else {
            Ok(format!("{input} done"))
        }
    }
}

/// Greets, calls the flaky service, greets again.
struct FlakyFlow;
impl engine::Orchestration for FlakyFlow {
    const NAME: &'static str = "FlakyFlow";
    type Input = String;
    type Output = Vec<String>;
    async fn run(
        ctx: engine::OrchestrationContext,
        input: String,
    ) -> Result<Vec<String>, engine::Failure> {
        let a = ctx
            .call_activity::<engine::samples::SayHello>(&input)
            .await?;
        let b = ctx.call_activity::<Flaky>(&input).await?;
        let c = ctx.call_activity::<engine::samples::SayHello>(&b).await?;
        Ok(vec![a, b, c])
    }
}

/// Runs a HumanInteraction as a child with a fixed id.
struct Supervisor;
impl engine::Orchestration for Supervisor {
    const NAME: &'static str = "Supervisor";
    type Input = String;
    type Output = ApprovalOutcome;
    async fn run(
        ctx: engine::OrchestrationContext,
        child_id: String,
    ) -> Result<ApprovalOutcome, engine::Failure> {
        ctx.call_sub_orchestration::<HumanInteraction>(&approval(60_000), Some(&child_id))
            .await
    }
}

async fn custom_runtime(dir: &Path) -> (Runtime<SqliteStore>, Client<SqliteStore>) {
    let mut registry = engine::samples::registry();
    registry
        .orchestration::<FlakyFlow>()
        .orchestration::<Supervisor>()
        .activity(Flaky);
    let rt = Runtime::start(open(dir).await, registry, RuntimeOptions::default());
    let client = rt.client();
    (rt, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_reruns_the_failed_step_and_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, client) = custom_runtime(tmp.path()).await;
    FLAKY_FAILS.store(true, std::sync::atomic::Ordering::SeqCst);
    let id = client
        .start::<FlakyFlow>(&"order-9".to_owned(), with_id("flaky-1"))
        .await
        .unwrap();
    let failed = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(failed.status, RuntimeStatus::Failed);
    let failure = failed.failure.unwrap();
    assert_eq!(failure.error_type, "TaskFailed");
    assert_eq!(failure.root_cause().message, "the service is down");

    // Rewind is refused for anything but a failed instance.
    let ok = client
        .start::<HelloSequence>(&vec!["x".into()], with_id("fine"))
        .await
        .unwrap();
    client.wait_for_completion(&ok, WAIT).await.unwrap();
    let err = client.rewind(&ok, "no").await.unwrap_err();
    assert!(matches!(err, ClientError::WrongState { .. }), "{err}");
    assert!(matches!(
        client.rewind("nope", "x").await,
        Err(ClientError::NotFound(_))
    ));

    FLAKY_FAILS.store(false, std::sync::atomic::Ordering::SeqCst);
    client.rewind(&id, "service is back").await.unwrap();
    let done = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(done.status, RuntimeStatus::Completed, "{done:?}");
    let output: Vec<String> = serde_json::from_str(done.output.as_deref().unwrap()).unwrap();
    assert_eq!(
        output,
        ["Hello, order-9!", "order-9 done", "Hello, order-9 done!"]
    );
    let history = client.history(&id).await.unwrap();
    let kinds: Vec<_> = history.iter().map(|e| e.kind.name()).collect();
    assert!(kinds.contains(&"ExecutionRewound"), "{kinds:?}");
    // The first greeting ran once: only the failed step was redone.
    let greetings = history
        .iter()
        .filter(|e| matches!(&e.kind, engine::EventKind::TaskScheduled { name, .. } if name == "SayHello"))
        .count();
    assert_eq!(greetings, 2);
    let counts = client.status_counts().await.unwrap();
    assert_eq!(counts[&RuntimeStatus::Failed], 0, "{counts:?}");
    assert_eq!(counts[&RuntimeStatus::Completed], 2, "{counts:?}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_terminate_stops_the_children_too() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, client) = custom_runtime(tmp.path()).await;
    let parent = client
        .start::<Supervisor>(&"child-1".to_owned(), with_id("supervisor-1"))
        .await
        .unwrap();
    wait_status(&client, "child-1", RuntimeStatus::Running).await;
    assert_eq!(
        client
            .get("child-1")
            .await
            .unwrap()
            .parent_instance_id
            .as_deref(),
        Some("supervisor-1")
    );
    client.terminate(&parent, "runaway", true).await.unwrap();
    let p = client.wait_for_completion(&parent, WAIT).await.unwrap();
    let c = client.wait_for_completion("child-1", WAIT).await.unwrap();
    assert_eq!(p.status, RuntimeStatus::Terminated);
    assert_eq!(c.status, RuntimeStatus::Terminated);
    // Purging the parent recursively removes the child as well.
    assert_eq!(client.purge(&parent, true).await.unwrap(), 2);
    assert!(matches!(
        client.get("child-1").await,
        Err(ClientError::NotFound(_))
    ));
    rt.shutdown().await;
}

/// Fails its first two deliveries of each distinct input, then succeeds.
struct FailsTwice;
static ATTEMPTS: std::sync::Mutex<BTreeMap<String, u32>> = std::sync::Mutex::new(BTreeMap::new());
impl engine::Activity for FailsTwice {
    const NAME: &'static str = "FailsTwice";
    type Input = String;
    type Output = u32;
    async fn run(&self, _: engine::ActivityContext, key: String) -> Result<u32, engine::Failure> {
        let attempt = {
            let mut attempts = ATTEMPTS.lock().unwrap();
            let n = attempts.entry(key).or_insert(0);
            *n += 1;
            *n
        };
        if attempt <= 2 {
            Err(engine::Failure::new(
                "Transient",
                format!("attempt {attempt} failed"),
            ))
        } else {
            Ok(attempt)
        }
    }
}

/// Calls FailsTwice with a retry policy; `max_attempts` comes from the input.
struct Retrying;
impl engine::Orchestration for Retrying {
    const NAME: &'static str = "Retrying";
    type Input = (String, u32);
    type Output = u32;
    async fn run(
        ctx: engine::OrchestrationContext,
        (key, max_attempts): (String, u32),
    ) -> Result<u32, engine::Failure> {
        ctx.set_custom_status(&"calling");
        let policy = engine::RetryPolicy::new(max_attempts, Duration::from_millis(20))
            .backoff_coefficient(2.0)
            .jitter(0.1)
            .retry_if(|f| f.error_type == "Transient");
        let attempts = ctx
            .call_activity_with_retry::<FailsTwice>(&key, &policy)
            .await?;
        ctx.set_custom_status(&format!("succeeded after {attempts} attempts"));
        Ok(attempts)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_on_durable_timers_and_give_up_when_told() {
    let tmp = tempfile::tempdir().unwrap();
    let mut registry = engine::samples::registry();
    registry.orchestration::<Retrying>().activity(FailsTwice);
    let (rt, client, store, clock) = clocked_runtime(tmp.path(), registry).await;

    let id = client
        .start::<Retrying>(&("a".to_owned(), 5), with_id("retry-ok"))
        .await
        .unwrap();
    let done = finish_by_timers(&client, &store, &clock, &id).await;
    assert_eq!(done.status, RuntimeStatus::Completed, "{done:?}");
    assert_eq!(done.output.as_deref(), Some("3"));
    assert_eq!(
        done.custom_status.as_deref(),
        Some("\"succeeded after 3 attempts\"")
    );
    let history = client.history(&id).await.unwrap();
    let count = |name: &str| history.iter().filter(|e| e.kind.name() == name).count();
    assert_eq!(count("TaskFailed"), 2);
    assert_eq!(count("TimerCreated"), 2, "each wait is a durable timer");
    assert_eq!(count("TaskCompleted"), 1);

    let id = client
        .start::<Retrying>(&("b".to_owned(), 2), with_id("retry-gives-up"))
        .await
        .unwrap();
    let done = finish_by_timers(&client, &store, &clock, &id).await;
    assert_eq!(done.status, RuntimeStatus::Failed);
    assert_eq!(
        done.failure.unwrap().root_cause().message,
        "attempt 2 failed"
    );
    assert_eq!(done.custom_status.as_deref(), Some("\"calling\""));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_times_out_and_queries_filter_by_time_and_sort_by_update() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, client, _store, clock) =
        clocked_runtime(tmp.path(), engine::samples::registry()).await;
    let waiting = client
        .start::<HumanInteraction>(&approval(60_000), with_id("slow"))
        .await
        .unwrap();
    let err = client
        .wait_for_completion(&waiting, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout(_)), "{err}");
    assert!(matches!(
        client
            .wait_for_completion("nope", Duration::from_millis(50))
            .await,
        Err(ClientError::NotFound(_))
    ));

    let before = client.get(&waiting).await.unwrap().created_at;
    clock.advance(Duration::from_millis(20));
    let later = client
        .start::<HelloSequence>(&vec!["x".into()], with_id("later"))
        .await
        .unwrap();
    client.wait_for_completion(&later, WAIT).await.unwrap();

    let created_after = client
        .query(&InstanceQuery {
            created_from: Some(before + 1),
            page_size: 10,
            ..InstanceQuery::default()
        })
        .await
        .unwrap();
    let ids: Vec<_> = created_after
        .instances
        .iter()
        .map(|r| r.instance_id.as_str())
        .collect();
    assert_eq!(ids, ["later"]);
    let by_update = client
        .query(&InstanceQuery {
            sort: SortBy::Updated,
            descending: true,
            page_size: 10,
            ..InstanceQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        by_update.instances[0].instance_id, "later",
        "most recently changed first"
    );
    let err = client
        .query(&InstanceQuery {
            created_from: Some(10),
            created_to: Some(5),
            ..InstanceQuery::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Invalid {
                what: "created range",
                ..
            }
        ),
        "{err}"
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_job_is_a_system_orchestration_that_pages_through_its_query() {
    use engine::system::{Bulk, BulkAction, BulkJob, BulkProgress, BulkState};
    let tmp = tempfile::tempdir().unwrap();
    let (rt, client) = runtime(tmp.path()).await;
    const N: usize = 250;
    for i in 0..N {
        client
            .start::<HumanInteraction>(&approval(600_000), with_id(&format!("batch-{i:03}")))
            .await
            .unwrap();
    }
    for i in 0..N {
        wait_status(&client, &format!("batch-{i:03}"), RuntimeStatus::Running).await;
    }
    // More than 20 chunks of 100 would continue as new; 250 takes three chunks.
    let job = BulkJob {
        action: BulkAction::Suspend,
        query: InstanceQuery {
            id_prefix: Some("batch-".into()),
            ..InstanceQuery::default()
        },
        reason: "maintenance".into(),
        limit: 200,
        expected: 200,
    };
    // Not through the generic start, which operators may use: through its own verb.
    let state = BulkState::from(job.clone());
    let err = client
        .start::<Bulk>(&state, with_id("bulk-suspend"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ClientError::Invalid { reason, .. } if reason.contains("system orchestration")),
        "{err}"
    );
    assert!(!client.orchestration_names().contains(&"switchyard.Bulk"));
    let id = client
        .start_bulk(job, with_id("bulk-suspend"))
        .await
        .unwrap();
    let done = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(done.status, RuntimeStatus::Completed, "{done:?}");
    let progress: BulkProgress = serde_json::from_str(done.output.as_deref().unwrap()).unwrap();
    assert_eq!(
        (
            progress.matched,
            progress.done,
            progress.failed,
            progress.finished
        ),
        (200, 200, 0, true),
        "the limit stops it: {progress:?}"
    );
    assert_eq!(
        done.custom_status, done.output,
        "the last progress is its status"
    );
    let suspended = |n| {
        let client = client.clone();
        async move {
            for _ in 0..500 {
                let counts = client.status_counts().await.unwrap();
                if counts.get(&RuntimeStatus::Suspended).copied().unwrap_or(0) == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("never {n} suspended");
        }
    };
    suspended(200).await;
    // A query can leave system instances out, as the dashboard's list does.
    let all = first_thousand(&client, false).await;
    assert!(all.iter().any(|r| r.instance_id == id));
    let visible = first_thousand(&client, true).await;
    assert_eq!(visible.len(), N);
    assert!(!visible.iter().any(|r| engine::system::is_system(&r.name)));
    // An absurd limit is refused at start.
    let too_many = BulkJob {
        action: BulkAction::Terminate,
        query: InstanceQuery::default(),
        reason: "all".into(),
        limit: engine::system::MAX_BULK + 1,
        expected: 0,
    };
    let err = client
        .start_bulk(too_many, StartOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Invalid { .. }), "{err}");
    rt.shutdown().await;
}
