//! `switchyard ctl`: every verb against a running server (the real binary, local mode), what it
//! prints and how it exits, and the API token it sends from `SWITCHYARD_TOKEN`.

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::cli::{free_port, http_post, start_server};

/// `switchyard ctl <args>` against the server on `port`, with `token` in the environment.
fn ctl(port: u16, token: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    // Isolate from the developer's environment: no inherited SWITCHYARD_* settings.
    for (key, _) in std::env::vars() {
        if key.starts_with("SWITCHYARD_") {
            cmd.env_remove(key);
        }
    }
    cmd.arg("ctl")
        .args(["--url", &format!("http://127.0.0.1:{port}")])
        .args(args);
    if let Some(token) = token {
        cmd.env("SWITCHYARD_TOKEN", token);
    }
    cmd.output().unwrap()
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .unwrap()
        .trim()
        .to_owned()
}

fn refused(output: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(stderr.contains(needle), "{needle:?} in {stderr}");
}

/// `ctl show id` until its status is `status`.
fn wait_for(port: u16, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown: Value = serde_json::from_str(&ok(&ctl(port, None, &["show", id]))).unwrap();
        if shown["status"] == status {
            return shown;
        }
        assert!(Instant::now() < deadline, "{id} never {status}: {shown}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the human-interaction sample as `id` through ctl and waits until it waits.
fn start_waiting(port: u16, id: &str) {
    let input = r#"{"request":"ctl","timeout_ms":600000}"#;
    let args = ["start", "HumanInteraction", "--input", input, "--id", id];
    ok(&ctl(port, None, &args));
    wait_for(port, id, "Running");
}

#[test]
fn ctl_lists_shows_starts_raises_terminates_and_purges() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = start_server(dir.path(), port);

    // start → show → list
    let id = ok(&ctl(
        port,
        None,
        &[
            "start",
            "HelloSequence",
            "--input",
            r#"["Ada"]"#,
            "--id",
            "ctl-hello",
        ],
    ));
    assert_eq!(id, "ctl-hello");
    let shown = wait_for(port, "ctl-hello", "Completed");
    assert_eq!(shown["input"], json!(["Ada"]), "{shown}");
    let listed = ok(&ctl(port, None, &["list", "--name", "HelloSequence"]));
    let mut lines = listed.lines();
    assert!(lines.next().unwrap().starts_with("ID"), "{listed}");
    let row = lines.next().unwrap();
    assert!(
        row.starts_with("ctl-hello") && row.contains("Completed"),
        "{listed}"
    );
    let as_json: Value = serde_json::from_str(&ok(&ctl(
        port,
        None,
        &["list", "--status", "Completed", "--json"],
    )))
    .unwrap();
    assert_eq!(as_json["instances"][0]["instance_id"], "ctl-hello");

    // raise: an approval completes the human-interaction sample.
    start_waiting(port, "ctl-ask");
    let raised = ok(&ctl(
        port,
        None,
        &[
            "raise",
            "ctl-ask",
            "Approval",
            "--payload",
            r#"{"approved":true,"comment":"from ctl"}"#,
            "--reason",
            "ctl test",
        ],
    ));
    assert_eq!(raised, "raised Approval on ctl-ask");
    wait_for(port, "ctl-ask", "Completed");

    // terminate → purge → gone
    start_waiting(port, "ctl-stop");
    let stopped = ok(&ctl(
        port,
        None,
        &["terminate", "ctl-stop", "--reason", "ctl test"],
    ));
    assert_eq!(stopped, "terminated ctl-stop");
    wait_for(port, "ctl-stop", "Terminated");
    assert_eq!(
        ok(&ctl(
            port,
            None,
            &["purge", "ctl-stop", "--reason", "ctl test"]
        )),
        "purged ctl-stop"
    );
    refused(&ctl(port, None, &["show", "ctl-stop"]), 1, "404");

    // Mistakes: bad JSON is caught before sending; a missing reason is a usage error; the
    // server's refusal is printed with its status.
    refused(
        &ctl(
            port,
            None,
            &["start", "HelloSequence", "--input", "not json"],
        ),
        1,
        "--input is not JSON",
    );
    refused(&ctl(port, None, &["terminate", "ctl-hello"]), 2, "--reason");
    refused(
        &ctl(port, None, &["start", "NoSuchOrchestration"]),
        1,
        "400",
    );
    refused(&ctl(port + 1, None, &["list"]), 1, "cannot reach");
}

#[test]
fn ctl_sends_the_token_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = start_server(dir.path(), port);
    // A token that is not one is refused, so it was sent.
    refused(&ctl(port, Some("sy_bogus"), &["list"]), 1, "401");
    // A real viewer token (made by the local admin) reads but cannot terminate.
    let created = http_post(
        port,
        "/api/fn/tokens/create",
        "application/x-www-form-urlencoded",
        "name=ctl&role=Viewer&days=1",
    )
    .unwrap();
    let body = created.split("\r\n\r\n").nth(1).unwrap();
    let secret = serde_json::from_str::<Value>(body.trim()).map_or_else(
        |_| {
            // A chunked body: the JSON is on its own line.
            let line = body.lines().find(|l| l.starts_with('{')).unwrap();
            serde_json::from_str::<Value>(line).unwrap()["secret"].clone()
        },
        |v| v["secret"].clone(),
    );
    let secret = secret
        .as_str()
        .unwrap_or_else(|| panic!("a token in {created}"));
    ok(&ctl(port, Some(secret), &["list"]));
    refused(
        &ctl(port, Some(secret), &["terminate", "any", "--reason", "r"]),
        1,
        "403",
    );
}
