//! Dashboard read paths at scale: with 100,000 instances in SQLite, how long the server takes to
//! render the instance list filtered by status and name (the whole server-side render through
//! the router, as a browser's first request gets it) and to answer the counts per status.
//!
//! Run: `cargo bench -p server --bench dashboard [-- <instances> <iterations>]`. Prints the
//! median, p90 and max of each and the targets (list ≤ 100 ms, counts ≤ 30 ms).
//!
//! The instances are inserted with SQL in one transaction (a realistic mix of names, statuses,
//! inputs and outputs over the past 30 days) and the maintained counters recomputed, because
//! running 100,000 orchestrations first would measure the engine, not the dashboard.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Request, StatusCode},
};
use engine::{Database, DatabaseUrl, Runtime, RuntimeOptions, SqliteStore, db::ConnectOptions};
use server::{AppState, auth::Auth};
use tower::ServiceExt;

const NAMES: [&str; 5] = [
    "HelloSequence",
    "HelloN",
    "FanOutFanIn",
    "Monitor",
    "HumanInteraction",
];
const STATUSES: [&str; 6] = [
    "Completed",
    "Completed",
    "Completed",
    "Failed",
    "Running",
    "Terminated",
];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let instances: u32 = args
        .next()
        .map_or(Ok(100_000), |a| a.parse())
        .context("instances")?;
    let iterations: usize = args
        .next()
        .map_or(Ok(50), |a| a.parse())
        .context("iterations")?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(instances, iterations))
}

async fn run(instances: u32, iterations: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let url: DatabaseUrl = format!("sqlite://{}/bench.db", dir.path().display()).parse()?;
    let db = Database::connect(&url, &ConnectOptions::default()).await?;
    db.migrate().await?;
    let Database::Sqlite(pool) = &db else {
        bail!("expected SQLite")
    };

    let started = Instant::now();
    seed(pool, instances).await?;
    println!(
        "seeded {instances} instances in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let store = SqliteStore::new(pool.clone()).await?;
    let runtime = Runtime::start(
        store,
        engine::samples::registry(),
        RuntimeOptions::default(),
    );
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    let router = server::app(AppState::new(
        db.clone(),
        Some(runtime.client()),
        Auth::Local,
        Path::new("target/site"),
        addr,
    ));

    let list = "/instances?status=Completed&name=HelloN";
    let (status, html) = get(&router, list).await?;
    if status != StatusCode::OK || html.matches("data-testid=\"instance-row\"").count() != 50 {
        bail!("the list did not render 50 rows: {status}");
    }
    let list_times = measure(iterations, || async { get(&router, list).await.map(drop) }).await?;
    report(
        "instance list, status+name filter, server-side render",
        &list_times,
        100.0,
    );

    let counts = "/api/fn/instances/counts";
    let (status, body) = post(&router, counts).await?;
    if status != StatusCode::OK || !body.contains("Completed") {
        bail!("counts failed: {status} {body}");
    }
    let count_times = measure(iterations, || async {
        post(&router, counts).await.map(drop)
    })
    .await?;
    report("counts per status (server function)", &count_times, 30.0);

    let page2 = "/instances?status=Failed&name=Monitor&sort=updated&order=asc";
    let page2_times = measure(iterations, || async { get(&router, page2).await.map(drop) }).await?;
    report(
        "instance list, other status+name, sorted by last change",
        &page2_times,
        100.0,
    );

    // What the live feed computes once a second while a dashboard is open: counts, the
    // throughput and latency window, waiting approvals and suspected runaways.
    let client = runtime.client();
    let snapshot_times = measure(iterations, || async {
        app::live::ssr::snapshot(&client, app::context::now_ms())
            .await
            .map(drop)
            .map_err(|e| anyhow::anyhow!("{e}"))
    })
    .await?;
    report(
        "live snapshot (computed once a second while watched)",
        &snapshot_times,
        100.0,
    );

    runtime.shutdown().await;
    Ok(())
}

async fn seed(pool: &sqlx::SqlitePool, instances: u32) -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let month = 30 * 24 * 3_600_000_i64;
    let mut tx = pool.begin().await?;
    for chunk in (0..instances).collect::<Vec<_>>().chunks(500) {
        let mut q = sqlx::QueryBuilder::new(
            "INSERT INTO instances (instance_id, name, status, input, output, created_at, updated_at, completed_at, history_len) ",
        );
        q.push_values(chunk, |mut row, &i| {
            let status = STATUSES[(i as usize * 7) % STATUSES.len()];
            let created = now - month + i64::from(i) * month / i64::from(instances.max(1));
            let done = (status != "Running").then_some(created + 40 + i64::from(i % 300));
            row.push_bind(format!("bench-{i:07}"))
                .push_bind(NAMES[i as usize % NAMES.len()])
                .push_bind(status)
                .push_bind(format!("{{\"request\":\"item {i}\",\"n\":{}}}", i % 97))
                .push_bind(done.map(|_| format!("\"Hello item {i}!\"")))
                .push_bind(created)
                .push_bind(done.unwrap_or(created))
                .push_bind(done)
                .push_bind(24);
        });
        q.build().execute(&mut *tx).await?;
    }
    sqlx::query(
        "UPDATE status_counts SET count = \
         (SELECT COUNT(*) FROM instances WHERE instances.status = status_counts.status)",
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    sqlx::query("ANALYZE").execute(pool).await?;
    Ok(())
}

async fn get(router: &Router, path: &str) -> Result<(StatusCode, String)> {
    send(router, Request::builder().uri(path).body(Body::empty())?).await
}

async fn post(router: &Router, path: &str) -> Result<(StatusCode, String)> {
    let request = Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::empty())?;
    send(router, request).await
}

async fn send(router: &Router, request: Request<Body>) -> Result<(StatusCode, String)> {
    let response = router.clone().oneshot(request).await?;
    let status = response.status();
    let body = to_bytes(response.into_body(), 16 << 20).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn measure<F, Fut>(iterations: usize, mut f: F) -> Result<Vec<Duration>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    // Two warm-up rounds fill SQLite's page cache, as on a running server.
    for _ in 0..2 {
        f().await?;
    }
    let mut times = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = Instant::now();
        f().await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times)
}

fn report(what: &str, times: &[Duration], target_ms: f64) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = ms(times[times.len() / 2]);
    let p90 = ms(times[times.len() * 9 / 10]);
    let max = ms(times[times.len() - 1]);
    let verdict = if median <= target_ms {
        "within"
    } else {
        "OVER"
    };
    println!(
        "{what}: median {median:.2} ms, p90 {p90:.2} ms, max {max:.2} ms over {} runs ({verdict} the {target_ms} ms target)",
        times.len()
    );
}
