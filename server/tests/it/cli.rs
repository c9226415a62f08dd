//! The `switchyard` binary on bad configuration and on shutdown: a non-zero exit and one line that
//! says what to fix; SIGTERM ends it cleanly; a bulk job cut off by SIGKILL finishes after the
//! restart.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

fn switchyard(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    // Isolate from the developer's environment: no inherited SWITCHYARD_* settings.
    for (key, _) in std::env::vars() {
        if key.starts_with("SWITCHYARD_") {
            cmd.env_remove(key);
        }
    }
    cmd.arg("--data-dir")
        .arg(data_dir)
        .env("SWITCHYARD_LOG", "warn");
    cmd
}

/// Asserts a failed start: the expected exit code and a single stderr line containing `needle`.
fn assert_one_line_failure(output: &Output, code: i32, needle: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one line expected, got: {stderr}");
    assert!(lines[0].contains(needle), "{needle:?} not in {stderr:?}");
    lines[0].to_owned()
}

#[test]
fn unknown_flag_exits_2_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let out = switchyard(tmp.path()).arg("--frobnicate").output().unwrap();
    let line = assert_one_line_failure(&out, 2, "unexpected argument '--frobnicate'");
    assert!(line.contains("--help"), "{line}");
}

#[test]
fn malformed_database_url_exits_1_naming_the_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let out = switchyard(tmp.path())
        .args(["--database-url", "mysql://db.example/switchyard"])
        .output()
        .unwrap();
    assert_one_line_failure(&out, 1, "invalid database-url");
}

#[test]
fn malformed_postgres_url_is_reported_without_its_password() {
    let tmp = tempfile::tempdir().unwrap();
    let out = switchyard(tmp.path())
        .env(
            "SWITCHYARD_DATABASE_URL",
            "postgres://app:s3cret@db:notaport/x",
        )
        .output()
        .unwrap();
    let line = assert_one_line_failure(&out, 1, "invalid database-url");
    assert!(!line.contains("s3cret"), "{line}");
}

#[test]
fn malformed_environment_value_is_reported_like_a_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let out = switchyard(tmp.path())
        .env("SWITCHYARD_BIND", "not-an-address")
        .output()
        .unwrap();
    assert_one_line_failure(&out, 2, "invalid value 'not-an-address'");
}

#[test]
fn unusable_data_dir_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    // A folder below a regular file cannot be created, even by root.
    let out = switchyard(&file.join("data")).output().unwrap();
    assert_one_line_failure(&out, 1, "choose a writable folder with --data-dir");
}

#[test]
fn port_in_use_exits_1_and_suggests_bind() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = switchyard(tmp.path())
        .args(["--bind", &addr.to_string()])
        .output()
        .unwrap();
    assert_one_line_failure(&out, 1, "already in use");
    assert!(
        !tmp.path().join("switchyard.db").exists(),
        "the port is checked before the database is created"
    );
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// Starts the server on `port` logging at `log` to a pipe, and waits until it is ready.
fn spawn_ready(data_dir: &Path, port: u16, log: &str) -> std::process::Child {
    let child = switchyard(data_dir)
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .env("SWITCHYARD_LOG", log)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Sends SIGTERM, waits for the exit, and returns it with everything the server logged.
fn terminate(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (exit, stderr)
}

#[test]
fn serves_until_sigterm_then_exits_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = spawn_ready(tmp.path(), port, "info");
    let (exit, stderr) = terminate(child);
    assert_eq!(exit.code(), Some(0), "{stderr}");
    assert!(stderr.contains("shut down cleanly"), "{stderr}");
    assert!(
        tmp.path().join("switchyard.db").is_file(),
        "SQLite file in data dir"
    );
}

pub(crate) fn http_post(port: u16, path: &str, content_type: &str, body: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// A running server that is killed (SIGKILL) when dropped, so a failed assertion leaves no process.
pub(crate) struct Running(std::process::Child);

impl Running {
    fn kill_9(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn start_server(data_dir: &Path, port: u16) -> Running {
    let child = Running(
        switchyard(data_dir)
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
        assert!(Instant::now() < deadline, "server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// What the database says of the bulk job and its batch.
#[derive(Debug, PartialEq, Eq)]
struct BulkState {
    /// Instances of the batch that are not Terminated.
    live: i64,
    /// `ExecutionTerminated` events over the batch's histories, and instances with other than one.
    terminations: i64,
    not_once: i64,
    /// The job instance's status and progress (custom status, or output once done).
    job: Option<(String, Option<String>)>,
}

fn bulk_state(data_dir: &Path) -> BulkState {
    const EVENT: &str = "\"type\":\"ExecutionTerminated\"";
    let url = format!("sqlite://{}/switchyard.db", data_dir.display());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
            let live: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM instances WHERE instance_id LIKE 'kill-%' AND status <> 'Terminated'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            let per_instance = format!(
                "SELECT instance_id, SUM((length(events) - length(replace(events, '{EVENT}', ''))) / {len}) AS n \
                 FROM history WHERE instance_id LIKE 'kill-%' GROUP BY instance_id",
                len = EVENT.len()
            );
            let counts: Vec<(String, i64)> =
                sqlx::query_as(&per_instance).fetch_all(&pool).await.unwrap();
            let job: Option<(String, Option<String>)> = sqlx::query_as(
                "SELECT status, COALESCE(output, custom_status) FROM instances \
                 WHERE name = 'switchyard.Bulk'",
            )
            .fetch_optional(&pool)
            .await
            .unwrap();
            pool.close().await;
            BulkState {
                live,
                terminations: counts.iter().map(|(_, n)| n).sum(),
                not_once: counts.iter().filter(|(_, n)| *n != 1).count() as i64,
                job,
            }
        })
}

/// Issue 11, acceptance 7: a bulk terminate of 10,000 instances, cut off by SIGKILL mid-way,
/// finishes after the restart; every instance ends Terminated exactly once; the job is a system
/// instance with its progress.
#[test]
fn a_bulk_job_cut_off_by_kill_9_finishes_after_the_restart() {
    const N: usize = 10_000;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start_server(tmp.path(), port);
    std::thread::scope(|scope| {
        for t in 0..8 {
            scope.spawn(move || {
                for i in (t..N).step_by(8) {
                    let body = format!(
                        r#"{{"name":"HumanInteraction","input":{{"request":"r","timeout_ms":600000}},"instance_id":"kill-{i:05}"}}"#
                    );
                    let response =
                        http_post(port, "/api/v1/instances", "application/json", &body).unwrap();
                    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
                }
            });
        }
    });
    let form = format!(
        "filter%5Bid_prefix%5D=kill-&action=Terminate&reason=crash&confirmation=terminate%20{N}"
    );
    let response = http_post(
        port,
        "/api/fn/bulk/run",
        "application/x-www-form-urlencoded",
        &form,
    )
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Cut the job off part-way: once some of the batch is terminated.
    let deadline = Instant::now() + Duration::from_secs(120);
    while bulk_state(tmp.path()).live > (N as i64) * 9 / 10 {
        assert!(Instant::now() < deadline, "the job made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill_9();
    let cut = bulk_state(tmp.path());
    assert!(
        cut.live > 0,
        "the job was stopped before it finished: {cut:?}"
    );
    assert_eq!(
        cut.job.as_ref().map(|j| j.0.as_str()),
        Some("Running"),
        "{cut:?}"
    );

    let server = start_server(tmp.path(), port);
    let deadline = Instant::now() + Duration::from_secs(180);
    let state = loop {
        let state = bulk_state(tmp.path());
        let done = state
            .job
            .as_ref()
            .is_some_and(|(status, _)| status == "Completed");
        if (done && state.live == 0) || Instant::now() > deadline {
            break state;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    server.kill_9();
    assert_eq!(
        state.live, 0,
        "every instance of the batch is terminated: {state:?}"
    );
    assert_eq!(
        (state.terminations, state.not_once),
        (N as i64, 0),
        "each exactly once"
    );
    let (status, progress) = state.job.expect("the job is a system instance");
    assert_eq!(status, "Completed");
    let progress: serde_json::Value = serde_json::from_str(&progress.unwrap()).unwrap();
    assert_eq!(progress["matched"], N as u64, "{progress}");
    assert_eq!(progress["failed"], 0, "{progress}");
    let changed = progress["done"].as_u64().unwrap() + progress["skipped"].as_u64().unwrap();
    assert_eq!(changed, N as u64, "{progress}");
    eprintln!(
        "bulk terminate of {N}: cut off with {} live; finished after the restart with {progress}",
        cut.live
    );
}

/// Finding 12: at `--log debug` the request log names the path, never the query, so the login
/// callback's authorization code and state stay out of the log.
#[test]
fn debug_logs_do_not_contain_the_callback_code() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = spawn_ready(tmp.path(), port, "debug");
    let response = http_get(
        port,
        "/auth/callback?code=SECRET-AUTH-CODE-123&state=SECRET-STATE-456",
    )
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 "), "{response}");
    let (_, stderr) = terminate(child);
    assert!(
        stderr.contains("/auth/callback"),
        "the request is logged: {stderr}"
    );
    assert!(!stderr.contains("SECRET-AUTH-CODE"), "{stderr}");
    assert!(!stderr.contains("SECRET-STATE"), "{stderr}");
}

/// Finding 12: a provider that answers with the wrong issuer is reported as such, at once, not
/// retried as unreachable.
#[test]
fn an_issuer_mismatch_stops_the_start_at_once_with_the_reason() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = std::thread::spawn(move || {
        // Serves one discovery document whose issuer is some other server.
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        let _ = stream.read(&mut buf);
        let body = format!(
            r#"{{"issuer":"http://other.example","authorization_endpoint":"http://127.0.0.1:{port}/auth","token_endpoint":"http://127.0.0.1:{port}/token","jwks_uri":"http://127.0.0.1:{port}/jwks","response_types_supported":["code"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256"]}}"#
        );
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = switchyard(tmp.path())
        .args(["--bind", &format!("127.0.0.1:{}", free_port())])
        .args(["--oidc-issuer", &format!("http://127.0.0.1:{port}")])
        .args(["--oidc-client-id", "switchyard"])
        .output()
        .unwrap();
    served.join().unwrap();
    let line = assert_one_line_failure(&out, 1, "answered, but its configuration is not usable");
    assert!(line.contains("other.example"), "{line}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no retries: {:?}",
        started.elapsed()
    );
}

/// One process per SQLite file: a second server on the same database exits 1 with one line that
/// names the file, and the first keeps serving.
#[test]
fn a_second_server_on_the_same_database_exits_1_and_the_first_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let first = spawn_ready(tmp.path(), port, "warn");
    let out = switchyard(tmp.path())
        .args(["--bind", &format!("127.0.0.1:{}", free_port())])
        // Only the failure: local mode's warning is not part of it.
        .env("SWITCHYARD_LOG", "error")
        .output()
        .unwrap();
    let still_serving = http_get(port, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200"));
    // Stopped before any assertion, so a failure leaves no server behind.
    let (exit, stderr) = terminate(first);
    let db = tmp.path().join("switchyard.db");
    let line = assert_one_line_failure(&out, 1, "is in use by another Switchyard process");
    assert!(line.contains(&db.display().to_string()), "{line}");
    assert!(still_serving, "the first server still serves");
    assert_eq!(exit.code(), Some(0), "{stderr}");
}
