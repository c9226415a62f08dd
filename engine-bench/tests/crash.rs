//! Crash test: a worker process runs 1,000 hello-5 orchestrations on a SQLite file and is killed
//! with SIGKILL mid-run; a second worker on the same file finishes the job. Every instance must
//! complete exactly once with an exact history: nothing lost, nothing duplicated.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use engine::{
    EventKind, RuntimeStatus,
    store::{InstanceQuery, StoreAdmin},
};

const N: usize = 1000;
const STEPS: u32 = 5;

fn worker(db: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_engine-bench"));
    cmd.args(["worker", "--db"])
        .arg(db)
        .args(["--n", &N.to_string(), "--steps", &STEPS.to_string()])
        // Slow activities a little so the kill lands mid-run.
        .args(["--delay-ms", "10"]);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_loses_and_duplicates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("crash.db");
    let mut first = worker(&db).stdout(Stdio::null()).spawn().unwrap();
    // Wait until the run is well under way: some finished, many not.
    let deadline = Instant::now() + Duration::from_secs(120);
    let (existing_at_kill, completed_at_kill, _) = loop {
        assert!(Instant::now() < deadline, "the worker made no progress");
        if let Some(status) = first.try_wait().unwrap() {
            panic!("the worker exited before it could be killed: {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Ok(conn) = sqlite_counts(&db).await else {
            continue;
        };
        // A fifth of all turns committed (history has one row per turn): under way, far from
        // done.
        if conn.0 >= N as i64 && conn.2 >= (N as i64) * i64::from(1 + STEPS) / 5 {
            break conn;
        }
    };
    Command::new("kill")
        .args(["-KILL", &first.id().to_string()])
        .status()
        .unwrap();
    let status = first.wait().unwrap();
    assert!(!status.success(), "killed, not finished: {status}");
    assert!(
        (completed_at_kill as usize) < N,
        "the kill must land mid-run ({completed_at_kill} of {N} done)"
    );

    let second = worker(&db).output().unwrap();
    assert!(
        second.status.success(),
        "restarted worker failed: {}",
        String::from_utf8_lossy(&second.stderr)
    );

    // Verify every instance from the database itself.
    let store = open_dir_with(&db).await;
    let mut records = Vec::new();
    let mut query = InstanceQuery {
        page_size: 1000,
        ..InstanceQuery::default()
    };
    loop {
        let page = store.query(&query).await.unwrap();
        records.extend(page.instances);
        match page.next_cursor {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(records.len(), N, "no instance lost");
    for record in &records {
        assert_eq!(record.status, RuntimeStatus::Completed, "{record:?}");
        assert_eq!(record.output.as_deref(), Some("5"));
        let history = store.history(&record.instance_id).await.unwrap();
        assert_eq!(
            history.len() as u32,
            4 + 4 * STEPS,
            "{}",
            record.instance_id
        );
        let count = |name: &str| history.iter().filter(|e| e.kind.name() == name).count();
        assert_eq!(count("ExecutionStarted"), 1);
        assert_eq!(count("ExecutionCompleted"), 1);
        assert_eq!(count("TaskScheduled"), STEPS as usize);
        assert_eq!(count("TaskCompleted"), STEPS as usize);
        // Sequence numbers are dense: no turn was written twice.
        assert!(history.iter().enumerate().all(|(i, e)| e.id as usize == i));
        assert!(matches!(
            history[1].kind,
            EventKind::ExecutionStarted { .. }
        ));
    }
    let counts = store.status_counts().await.unwrap();
    assert_eq!(counts[&RuntimeStatus::Completed], N as i64, "{counts:?}");
    assert_eq!(
        counts[&RuntimeStatus::Running] + counts[&RuntimeStatus::Pending],
        0
    );
    println!(
        "killed with {existing_at_kill} instances stored, {completed_at_kill} completed; \
         after restart all {N} completed exactly once"
    );
}

/// (instances, completed, history rows = committed turns) read straight from the file.
async fn sqlite_counts(db: &std::path::Path) -> Result<(i64, i64, i64), sqlx::Error> {
    use sqlx::{ConnectOptions, sqlite::SqliteConnectOptions};
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM instances")
        .fetch_one(&mut conn)
        .await?;
    let completed: i64 =
        sqlx::query_scalar("SELECT count FROM status_counts WHERE status = 'Completed'")
            .fetch_one(&mut conn)
            .await?;
    let events: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM history")
        .fetch_one(&mut conn)
        .await?;
    Ok((total, completed, events))
}

async fn open_dir_with(db: &std::path::Path) -> engine::SqliteStore {
    use engine::{Database, DatabaseUrl, db::ConnectOptions};
    let url: DatabaseUrl = format!("sqlite://{}", db.display()).parse().unwrap();
    let Database::Sqlite(pool) = Database::connect(&url, &ConnectOptions::default())
        .await
        .unwrap()
    else {
        unreachable!()
    };
    engine::SqliteStore::new(pool).await.unwrap()
}

/// Runs the worker with `--poison kind` until it finishes (at most three runs); returns how
/// many times it aborted.
fn run_until_done(db: &std::path::Path, kind: &str, n: usize) -> u32 {
    let mut aborted = 0;
    loop {
        let out = Command::new(env!("CARGO_BIN_EXE_engine-bench"))
            .args(["worker", "--db"])
            .arg(db)
            .args(["--n", &n.to_string(), "--steps", "3", "--delay-ms", "5"])
            .args(["--poison", kind])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            return aborted;
        }
        assert!(
            stderr.contains("poison: aborting the process"),
            "the worker failed for another reason: {stderr}"
        );
        aborted += 1;
        assert!(
            aborted <= 2,
            "still crashing after {aborted} aborts: {stderr}"
        );
    }
}

/// Checks that the `n` hello-3 instances completed exactly once.
async fn all_others_completed(store: &engine::SqliteStore, n: usize) {
    let page = store
        .query(&InstanceQuery {
            page_size: 1000,
            id_prefix: Some("crash-".into()),
            ..InstanceQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.instances.len(), n);
    for record in &page.instances {
        assert_eq!(record.status, RuntimeStatus::Completed, "{record:?}");
        let history = store.history(&record.instance_id).await.unwrap();
        assert_eq!(history.len(), 4 + 4 * 3, "{}", record.instance_id);
        assert!(history.iter().enumerate().all(|(i, e)| e.id as usize == i));
    }
    let counts = store.status_counts().await.unwrap();
    assert_eq!(counts[&RuntimeStatus::Completed], n as i64);
    assert_eq!(counts[&RuntimeStatus::Failed], 1);
}

/// The crash-loop test: `poison`'s turn aborts the worker process. The first start after an
/// abort finds `poison` in the turn journal once and runs it again (it may have been bad luck);
/// the next one quarantines it, failing it without running its code, and the 100 instances
/// started around it complete exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_that_aborts_the_process_is_quarantined_and_the_rest_complete() {
    const N: usize = 100;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("poison.db");
    let aborted = run_until_done(&db, "turn", N);
    assert_eq!(aborted, 2, "aborted twice, then quarantined");

    let store = open_dir_with(&db).await;
    let poison = store.get("poison").await.unwrap().unwrap();
    assert_eq!(poison.status, RuntimeStatus::Failed);
    let failure = poison.failure.unwrap();
    assert_eq!(failure.error_type, "Quarantined");
    assert!(failure.message.contains("2 times"), "{}", failure.message);
    let history = store.history("poison").await.unwrap();
    let kinds: Vec<&str> = history.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        kinds,
        [
            "OrchestratorStarted",
            "ExecutionStarted",
            "ExecutionFailed",
            "OrchestratorCompleted"
        ]
    );
    all_others_completed(&store, N).await;
    println!(
        "poison aborted the worker {aborted} times, was quarantined, and {N} others completed"
    );
}

/// The same for an activity that aborts the process while others run beside it: after the first
/// abort every activity that was running runs again alone, so the second abort names the culprit
/// alone; the next start fails it as `Quarantined` to its orchestration, and nothing innocent is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activity_that_aborts_the_process_is_quarantined_and_the_rest_complete() {
    const N: usize = 100;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("poison-activity.db");
    let aborted = run_until_done(&db, "activity", N);
    assert_eq!(aborted, 2, "aborted twice, then quarantined");

    let store = open_dir_with(&db).await;
    let poison = store.get("poison").await.unwrap().unwrap();
    assert_eq!(poison.status, RuntimeStatus::Failed);
    let failure = format!("{:?}", poison.failure.unwrap());
    assert!(failure.contains("Quarantined"), "{failure}");
    assert!(failure.contains("AbortActivity"), "{failure}");
    all_others_completed(&store, N).await;
    println!(
        "the activity aborted the worker {aborted} times, was quarantined, and {N} others completed"
    );
}

/// One process per SQLite file: a second worker (or benchmark) on a file a running worker holds
/// exits 1 with one line naming the file, and the first finishes its work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_the_same_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("shared.db");
    let mut first = Command::new(env!("CARGO_BIN_EXE_engine-bench"))
        .args(["worker", "--db"])
        .arg(&db)
        .args(["--n", "200", "--steps", "3", "--delay-ms", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the first worker has its store (the lock file exists and instances are stored).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(sqlite_counts(&db).await, Ok((n, _, _)) if n > 0) {
        assert!(Instant::now() < deadline, "the first worker did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = Command::new(env!("CARGO_BIN_EXE_engine-bench"))
        .args(["worker", "--db"])
        .arg(&db)
        .args(["--n", "200", "--steps", "3"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr).into_owned();
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("is in use by another Switchyard process"),
        "{stderr}"
    );
    assert!(stderr.contains(&db.display().to_string()), "{stderr}");
    let status = first.wait().unwrap();
    assert!(status.success(), "the first worker finished its work");
}
