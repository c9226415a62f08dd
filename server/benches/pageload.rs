//! A burst of page loads against the real server binary (release build): 2,000 browsers loading
//! the instance list at the same moment, as in the hardening finding that exhausted the database
//! pool (124–254 answers 503, p50 8.7 s, 336 MB RSS).
//!
//! Run: `cargo bench -p server --bench pageload [-- <concurrent> <rounds> <path> <mode>]`
//! (default 2,000, 3, `/instances` and `oidc`).
//! The server runs on a fresh data directory with 200 finished instances, so every load renders a
//! full list. In `oidc` mode it signs users in with OpenID Connect (the bench serves the
//! provider's discovery document and keys; nobody logs in) and every load carries a session
//! cookie stored in the database, so each load also reads its session; `local` mode has no login. Each round opens all connections at once, sends
//! `GET /instances`, reads each whole response and records its status and latency. Prints per
//! round: the statuses, p50/p90/p99/max latency, and the server's peak RSS (`VmHWM`), then the
//! medians over the rounds against the targets (every answer 200, p99 ≤ 5 s, RSS ≤ 200 MB).

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

struct Server(Child);

impl Drop for Server {
    /// SIGTERM, so the server (and a profiler wrapping it) shuts down cleanly.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let concurrent: usize = args.next().map_or(Ok(2_000), |a| a.parse())?;
    let rounds: usize = args.next().map_or(Ok(3), |a| a.parse())?;
    let path = args.next().unwrap_or_else(|| "/instances".to_owned());
    let oidc = match args.next().as_deref() {
        None | Some("oidc") => true,
        Some("local") => false,
        Some(other) => bail!("mode {other:?}: use oidc or local"),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(concurrent, rounds, path, oidc))
}

/// One HTTP/1.1 exchange on a fresh connection: (status, whole response length).
async fn exchange(port: u16, request: &str) -> Result<(u16, usize)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let head = String::from_utf8_lossy(&response[..response.len().min(64)]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {head:?}"))?;
    Ok((status, response.len()))
}

fn get(path: &str, port: u16, cookie: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    )
}

fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")?;
    Ok(kib / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Serves an OIDC provider's discovery document and an empty key set on loopback: enough for
/// the server's start-up discovery. Returns the issuer URL.
async fn fake_provider() -> Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let issuer = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    let metadata = serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/auth"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
    })
    .to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let metadata = metadata.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                let body = if head.starts_with("GET /jwks") {
                    r#"{"keys":[]}"#.to_owned()
                } else {
                    metadata
                };
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    Ok(issuer)
}

/// Stores a signed-in user's session in the server's database, as a login would; returns the
/// cookie that carries it.
async fn session(db: &Path, role: app::session::Role) -> Result<String> {
    use tower_sessions::{
        SessionStore,
        session::{Id, Record},
    };
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await?;
    let user = server::auth::SessionUser {
        subject: "load".into(),
        name: format!("load-{}", role.label()),
        role,
        id_token: String::new(),
    };
    let mut record = Record {
        id: Id::default(),
        data: [(server::auth::USER.to_owned(), serde_json::to_value(&user)?)].into(),
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::hours(1),
    };
    tower_sessions_sqlx_store::SqliteStore::new(pool.clone())
        .create(&mut record)
        .await
        .map_err(|e| anyhow::anyhow!("store the session: {e}"))?;
    pool.close().await;
    Ok(format!("{}={}", server::auth::COOKIE, record.id))
}

async fn run(concurrent: usize, rounds: usize, path: String, oidc: bool) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let site_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/site");
    // `PAGELOAD_BIN` measures another build (an older commit's, for a before/after);
    // `PAGELOAD_WRAP="valgrind --tool=massif"` runs the server under a profiler.
    let bin = std::env::var("PAGELOAD_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_switchyard").to_owned());
    let wrap = std::env::var("PAGELOAD_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(&bin);
            c
        }
        None => Command::new(&bin),
    };
    let server = Server(
        command
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--site-root")
            .arg(&site_root)
            .args(if oidc {
                vec![
                    "--oidc-issuer".to_owned(),
                    fake_provider().await?,
                    "--oidc-client-id".to_owned(),
                    "switchyard".to_owned(),
                ]
            } else {
                Vec::new()
            })
            .env("SWITCHYARD_LOG", "warn")
            .stderr(Stdio::inherit())
            .spawn()
            .context("start the server")?,
    );
    let pid = server.0.id();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !matches!(
        exchange(port, &get("/readyz", port, "")).await,
        Ok((200, _))
    ) {
        if Instant::now() > deadline {
            bail!("the server did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let db = dir.path().join("switchyard.db");
    let (operator, viewer) = if oidc {
        (
            session(&db, app::session::Role::Operator).await?,
            session(&db, app::session::Role::Viewer).await?,
        )
    } else {
        (String::new(), String::new())
    };
    for i in 0..200 {
        let body =
            format!(r#"{{"name":"HelloSequence","input":["n{i}"],"instance_id":"load-{i:03}"}}"#);
        let request = format!(
            "POST /api/v1/instances HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
             Cookie: {operator}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (status, _) = exchange(port, &request).await?;
        if status != 201 {
            bail!("seeding: start answered {status}");
        }
    }
    let (status, page_len) = exchange(port, &get(&path, port, &viewer)).await?;
    println!(
        "server pid {pid} ({} mode); seeded 200 instances; one {path} load: {status}, {page_len} bytes; \
         RSS before: {:.1} MiB",
        if oidc { "oidc" } else { "local" },
        peak_rss_mib(pid)?
    );

    let (mut p50s, mut p99s, mut maxes, mut rss) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut all_ok = true;
    for round in 1..=rounds {
        let started = Instant::now();
        let mut loads = tokio::task::JoinSet::new();
        for _ in 0..concurrent {
            let request = get(&path, port, &viewer);
            loads.spawn(async move {
                let t = Instant::now();
                let outcome = exchange(port, &request).await;
                (outcome, t.elapsed())
            });
        }
        let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
        let mut latencies = Vec::with_capacity(concurrent);
        while let Some(done) = loads.join_next().await {
            let (outcome, latency) = done?;
            let key = match outcome {
                Ok((status, len)) if status == 200 && len < page_len / 2 => {
                    format!("{status} short")
                }
                Ok((status, _)) => status.to_string(),
                Err(e) => format!("error: {e}"),
            };
            *statuses.entry(key).or_default() += 1;
            latencies.push(latency);
        }
        let wall = started.elapsed();
        latencies.sort();
        let peak = peak_rss_mib(pid)?;
        let ok = statuses.get("200").copied() == Some(concurrent);
        all_ok &= ok;
        println!(
            "round {round}: {concurrent} concurrent loads in {:.2} s; statuses {statuses:?}; \
             latency p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms; peak RSS {peak:.1} MiB",
            wall.as_secs_f64(),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.9).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        );
        p50s.push(percentile(&latencies, 0.5).as_secs_f64() * 1e3);
        p99s.push(percentile(&latencies, 0.99).as_secs_f64() * 1e3);
        maxes.push(latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3));
        rss.push(peak);
    }
    let p99 = median(p99s);
    let peak = rss.iter().copied().fold(0.0, f64::max);
    println!(
        "medians over {rounds} rounds: p50 {:.0} ms, p99 {p99:.0} ms, max {:.0} ms; peak RSS {peak:.1} MiB",
        median(p50s),
        median(maxes),
    );
    println!(
        "targets: every response 200: {}; p99 <= 5000 ms: {}; peak RSS <= 200 MiB: {}",
        if all_ok { "yes" } else { "NO" },
        if p99 <= 5_000.0 { "yes" } else { "NO" },
        if peak <= 200.0 { "yes" } else { "NO" },
    );
    Ok(())
}
