//! Eager activities: quick results share one commit with the turns around them (and a start run
//! at once with its first turn); an activity
//! slower than the window gets its row while it runs, runs once, and its result is delivered
//! under the row's lease.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use engine::{
    Runtime, RuntimeOptions, RuntimeStatus, StartOptions,
    history::EventKind,
    samples::{HelloSequence, SayHello},
    store::Store,
};
use tokio::sync::Semaphore;

use crate::runtime::open;

fn hello(id: &str) -> StartOptions {
    StartOptions {
        instance_id: Some(id.into()),
        ..StartOptions::default()
    }
}

/// Commits a hello-3 took, with or without eager activities.
async fn commits_for_hello_3(eager_window: Option<Duration>) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let options = RuntimeOptions {
        eager_window,
        ..RuntimeOptions::default()
    };
    let rt = Runtime::start(open(dir.path()).await, engine::samples::registry(), options);
    let client = rt.client();
    let names = vec!["a".to_owned(), "b".into(), "c".into()];
    let before = rt.stats().commits;
    client
        .start::<HelloSequence>(&names, hello("h"))
        .await
        .unwrap();
    let done = client
        .wait_for_completion("h", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(done.status, RuntimeStatus::Completed);
    let history = client.history("h").await.unwrap();
    let count = |kind: fn(&EventKind) -> bool| history.iter().filter(|e| kind(&e.kind)).count();
    assert_eq!(count(|k| matches!(k, EventKind::TaskScheduled { .. })), 3);
    assert_eq!(count(|k| matches!(k, EventKind::TaskCompleted { .. })), 3);
    assert!(history.iter().enumerate().all(|(i, e)| e.id as usize == i));
    let commits = rt.stats().commits - before;
    rt.shutdown().await;
    commits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_activities_share_one_commit_with_their_turns() {
    let eager = commits_for_hello_3(Some(Duration::from_secs(5))).await;
    let committed_first = commits_for_hello_3(None).await;
    println!("hello-3: {eager} commits with eager activities, {committed_first} without");
    assert_eq!(eager, 1, "the start and the whole run, together");
    assert_eq!(committed_first, 5, "the start and one per turn");
}

/// Runs once per call, after the test lets it.
struct Gated {
    gate: Arc<Semaphore>,
    runs: Arc<AtomicUsize>,
}

impl engine::Activity for Gated {
    const NAME: &'static str = "Gated";
    type Input = String;
    type Output = String;
    async fn run(
        &self,
        _: engine::ActivityContext,
        input: String,
    ) -> Result<String, engine::Failure> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let _permit = self.gate.acquire().await.expect("gate open");
        Ok(format!("{input} passed"))
    }
}

struct GatedFlow;
impl engine::Orchestration for GatedFlow {
    const NAME: &'static str = "GatedFlow";
    type Input = String;
    type Output = String;
    async fn run(
        ctx: engine::OrchestrationContext,
        input: String,
    ) -> Result<String, engine::Failure> {
        let first = ctx.call_activity::<SayHello>(&input).await?;
        ctx.call_activity::<Gated>(&first).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_slower_than_the_window_gets_its_row_and_runs_once() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let runs = Arc::new(AtomicUsize::new(0));
    let mut registry = engine::samples::registry();
    registry.orchestration::<GatedFlow>().activity(Gated {
        gate: gate.clone(),
        runs: runs.clone(),
    });
    let options = RuntimeOptions {
        eager_window: Some(Duration::from_millis(30)),
        ..RuntimeOptions::default()
    };
    let store = open(dir.path()).await;
    let rt = Runtime::start(store.clone(), registry, options);
    let client = rt.client();
    client
        .start::<GatedFlow>(&"x".to_owned(), hello("g"))
        .await
        .unwrap();
    // The window passes with the gated activity running: its schedule is committed, with a row.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let history = client.history("g").await.unwrap();
        let scheduled = history
            .iter()
            .filter(|e| matches!(e.kind, EventKind::TaskScheduled { .. }))
            .count();
        if scheduled == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{history:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rows: i64 = {
        let engine::Database::Sqlite(pool) = engine::Database::connect(
            &format!("sqlite://{}", dir.path().join("engine.db").display())
                .parse()
                .unwrap(),
            &engine::db::ConnectOptions::default(),
        )
        .await
        .unwrap() else {
            unreachable!()
        };
        sqlx::query_scalar("SELECT COUNT(*) FROM activities WHERE name = 'Gated'")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert_eq!(rows, 1, "the running activity has its row");
    assert_eq!(
        client.get("g").await.unwrap().status,
        RuntimeStatus::Running
    );
    gate.add_permits(1);
    let done = client
        .wait_for_completion("g", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(done.status, RuntimeStatus::Completed);
    assert_eq!(done.output.as_deref(), Some("\"Hello, x! passed\""));
    // Let any second run show itself before counting.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the activity ran once");
    rt.shutdown().await;
    let left: Vec<_> = store
        .fetch_activities(
            &engine::store::Holder("other".into()),
            0,
            i64::MAX / 2,
            1,
            10,
        )
        .await
        .unwrap()
        .items;
    assert!(
        left.is_empty(),
        "its row was consumed with its result: {left:?}"
    );
}
