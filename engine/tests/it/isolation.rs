//! One bad orchestration fails itself, never the engine: panics in orchestration code, absurd
//! sample inputs, and what an ended execution leaves behind.

use std::time::Duration;

use engine::{
    ClientError, Failure, Orchestration, OrchestrationContext, Runtime, RuntimeOptions,
    RuntimeStatus, StartOptions,
    samples::{ApprovalRequest, HelloSequence, HumanInteraction, MonitorInput},
};

use crate::runtime::{open, runtime, wait_status};

const WAIT: Duration = Duration::from_secs(30);

/// Asks for an impossible allocation, as `FanOutFanIn` did with `u64::MAX` before it validated
/// its input: Rust panics with "capacity overflow".
struct Overflow;
impl Orchestration for Overflow {
    const NAME: &'static str = "Overflow";
    type Input = u64;
    type Output = usize;
    async fn run(ctx: OrchestrationContext, n: u64) -> Result<usize, Failure> {
        ctx.call_activity::<engine::samples::SayHello>(&"first".to_owned())
            .await?;
        let v: Vec<u64> = Vec::with_capacity(n as usize);
        Ok(v.capacity())
    }
}

/// Runs `Overflow` as a child: the child's panic reaches the parent as a failure.
struct OverflowParent;
impl Orchestration for OverflowParent {
    const NAME: &'static str = "OverflowParent";
    type Input = ();
    type Output = usize;
    async fn run(ctx: OrchestrationContext, (): ()) -> Result<usize, Failure> {
        ctx.call_sub_orchestration::<Overflow>(&u64::MAX, None)
            .await
    }
}

fn with_id(id: &str) -> StartOptions {
    StartOptions {
        instance_id: Some(id.into()),
        ..StartOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_orchestration_fails_itself_and_the_engine_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let mut registry = engine::samples::registry();
    registry
        .orchestration::<Overflow>()
        .orchestration::<OverflowParent>();
    let rt = Runtime::start(open(tmp.path()).await, registry, RuntimeOptions::default());
    let client = rt.client();

    let names = vec!["a".to_owned(), "b".to_owned()];
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            client
                .start::<HelloSequence>(&names, with_id(&format!("before-{i}")))
                .await
                .unwrap(),
        );
    }
    client
        .start::<Overflow>(&u64::MAX, with_id("overflow"))
        .await
        .unwrap();
    client
        .start::<OverflowParent>(&(), with_id("parent"))
        .await
        .unwrap();
    for i in 0..20 {
        ids.push(
            client
                .start::<HelloSequence>(&names, with_id(&format!("after-{i}")))
                .await
                .unwrap(),
        );
    }

    let failed = client.wait_for_completion("overflow", WAIT).await.unwrap();
    assert_eq!(failed.status, RuntimeStatus::Failed);
    let failure = failed.failure.unwrap();
    assert_eq!(failure.error_type, "Panicked");
    assert!(failure.message.contains("capacity overflow"), "{failure:?}");

    let parent = client.wait_for_completion("parent", WAIT).await.unwrap();
    assert_eq!(parent.status, RuntimeStatus::Failed);
    let cause = format!("{:?}", parent.failure.unwrap());
    assert!(cause.contains("capacity overflow"), "{cause}");

    for id in &ids {
        let done = client.wait_for_completion(id, WAIT).await.unwrap();
        assert_eq!(done.status, RuntimeStatus::Completed, "{id}");
    }
    // New work still runs, and the engine says it is healthy.
    let late = client
        .start::<HelloSequence>(&names, with_id("late"))
        .await
        .unwrap();
    let done = client.wait_for_completion(&late, WAIT).await.unwrap();
    assert_eq!(done.status, RuntimeStatus::Completed);
    assert!(client.health().ready, "{:?}", client.health());
    // Terminating or raising on the failed instance is refused, not replayed into a panic.
    assert!(matches!(
        client.terminate("overflow", "cleanup", false).await,
        Err(ClientError::Gone { .. } | ClientError::WrongState { .. })
    ));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_refuse_absurd_inputs_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, client) = runtime(tmp.path()).await;
    let refused = [
        ("FanOutFanIn", "1000000000000".to_owned(), "at most 10000"),
        (
            "FanOutFanIn",
            "18446744073709551615".to_owned(),
            "at most 10000",
        ),
        ("HelloN", "4294967295".to_owned(), "at most 1000"),
        (
            "Monitor",
            serde_json::to_string(&MonitorInput {
                job_id: "j".into(),
                checks: 0,
                ready_after: Some(1),
                interval: Duration::from_millis(u64::MAX - 1),
                max_interval: Duration::from_millis(u64::MAX),
                deadline_ms: None,
                timeout: Duration::from_secs(1),
            })
            .unwrap(),
            "interval_ms",
        ),
        (
            "HumanInteraction",
            serde_json::to_string(&ApprovalRequest {
                request: "r".into(),
                timeout: Duration::from_millis(u64::MAX),
            })
            .unwrap(),
            "timeout_ms",
        ),
        ("FanOutFanIn", "\"ten\"".to_owned(), "cannot decode"),
    ];
    for (name, input, says) in refused {
        match client
            .start_raw(name, &input, StartOptions::default())
            .await
        {
            Err(ClientError::Invalid { what, reason }) => {
                assert_eq!(what, "input");
                assert!(reason.contains(says), "{name} {input}: {reason}");
            }
            other => panic!("{name} {input}: expected Invalid, got {other:?}"),
        }
    }
    // Nothing was stored.
    let counts = client.status_counts().await.unwrap();
    assert_eq!(counts.values().sum::<i64>(), 0, "{counts:?}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_execution_leaves_no_timers_or_activities_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let (rt, client) = runtime(tmp.path()).await;
    let request = ApprovalRequest {
        request: "r".into(),
        timeout: Duration::from_secs(3_600),
    };
    let id = client
        .start::<HumanInteraction>(&request, with_id("waits"))
        .await
        .unwrap();
    wait_status(&client, &id, RuntimeStatus::Running).await;
    let db = tmp.path().join("engine.db");
    // Running: its timeout timer is stored.
    assert_eq!(rows(&db, "timers", &id).await, 1);
    client.terminate(&id, "not needed", false).await.unwrap();
    wait_status(&client, &id, RuntimeStatus::Terminated).await;
    assert_eq!(rows(&db, "timers", &id).await, 0);
    assert_eq!(rows(&db, "activities", &id).await, 0);
    rt.shutdown().await;
}

async fn rows(db: &std::path::Path, table: &str, id: &str) -> i64 {
    use sqlx::{ConnectOptions, sqlite::SqliteConnectOptions};
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    sqlx::query_scalar(&format!(
        "SELECT COUNT(*) FROM {table} WHERE instance_id = ?"
    ))
    .bind(id)
    .fetch_one(&mut conn)
    .await
    .unwrap()
}
