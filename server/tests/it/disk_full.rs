//! Finding 3: a full disk must not wedge the engine. The test makes a small filesystem of its
//! own (a tmpfs, which needs root: CI runs as root; elsewhere it says why it cannot run and
//! returns), fills it while the server works, checks that starts get 503 and `/readyz` says
//! why, frees the space and checks that everything resumes by itself.

use std::{path::Path, process::Command, time::Duration};

use axum::{
    Router,
    body::{Body, to_bytes},
    http::{Request, StatusCode},
};
use engine::{Database, DatabaseUrl, Runtime, RuntimeOptions, RuntimeStatus, SqliteStore};
use tower::ServiceExt;

/// Unmounts the test's filesystem when the test ends, however it ends.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> Result<Mount, String> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if out.status.success() {
        Ok(Mount(dir.to_owned()))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

async fn call(router: &Router, method: &str, path: &str, body: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Fills the filesystem at `dir` with one file until writes fail.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    // The last bytes, down to nothing left.
    while file.write_all(&[0u8; 512]).is_ok() {}
    let _ = file.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_503_and_not_ready_then_work_resumes_by_itself() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let _mount = match mount_tmpfs(&mnt, "6m") {
        Ok(m) => m,
        Err(reason) => {
            println!(
                "disk-full test cannot run here (it mounts a tmpfs, which needs root): {reason}"
            );
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI runs as root and must run this test: {reason}"
            );
            return;
        }
    };
    let url: DatabaseUrl = format!("sqlite://{}/full.db", mnt.display())
        .parse()
        .unwrap();
    let db = Database::connect(&url, &engine::db::ConnectOptions::default())
        .await
        .unwrap();
    db.migrate().await.unwrap();
    let Database::Sqlite(pool) = &db else {
        unreachable!()
    };
    let runtime = Runtime::start(
        SqliteStore::new(pool.clone()).await.unwrap(),
        engine::samples::registry(),
        RuntimeOptions::default(),
    );
    let client = runtime.client();
    let router = server::app(server::AppState::new(
        db.clone(),
        Some(client.clone()),
        server::auth::Auth::Local,
        Path::new("target/site"),
        "127.0.0.1:0".parse().unwrap(),
    ));
    let start = |id: String, size: usize| {
        let names = vec!["x".repeat(size)];
        serde_json::json!({ "name": "HelloSequence", "input": names, "instance_id": id })
            .to_string()
    };
    let (status, body) = call(
        &router,
        "POST",
        "/api/v1/instances",
        &start("before".into(), 10),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    client
        .wait_for_completion("before", Duration::from_secs(30))
        .await
        .unwrap();

    let filler = fill(&mnt);
    // Starts write their input: with no space left they fail, as 503, not as a hang or a 500.
    let mut refused = 0;
    for i in 0..200 {
        let (status, body) = call(
            &router,
            "POST",
            "/api/v1/instances",
            &start(format!("full-{i}"), 20_000),
        )
        .await;
        match status {
            StatusCode::CREATED => continue, // the WAL may still have room for a few
            StatusCode::SERVICE_UNAVAILABLE => {
                refused += 1;
                if refused >= 3 {
                    break;
                }
            }
            other => panic!("start on a full disk answered {other}: {body}"),
        }
    }
    assert!(refused >= 3, "starts kept succeeding on a full disk");
    let (status, body) = call(&router, "GET", "/readyz", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("writes to the store fail"), "{body}");
    assert!(!client.health().ready);

    // Space comes back: the engine notices by itself (its probe or a retried commit), without
    // a restart.
    std::fs::remove_file(filler).unwrap();
    let mut ready = false;
    for _ in 0..300 {
        let (status, _) = call(&router, "GET", "/readyz", "").await;
        if status == StatusCode::OK {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        ready,
        "still not ready after the space was freed: {:?}",
        client.health()
    );
    let (status, body) = call(
        &router,
        "POST",
        "/api/v1/instances",
        &start("after".into(), 10),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let done = client
        .wait_for_completion("after", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(done.status, RuntimeStatus::Completed);
    // Whatever did get started while the disk filled completes too.
    let page = client
        .query(&engine::store::InstanceQuery {
            id_prefix: Some("full-".into()),
            page_size: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    for record in page.instances {
        let done = client
            .wait_for_completion(&record.instance_id, Duration::from_secs(30))
            .await
            .unwrap();
        assert_eq!(
            done.status,
            RuntimeStatus::Completed,
            "{}",
            record.instance_id
        );
    }
    runtime.shutdown().await;
    db.close().await;
}
