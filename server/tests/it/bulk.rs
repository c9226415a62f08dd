//! Bulk jobs are durable: their instances and outcomes are in the database, progress is read
//! from there, and a job a stopped server left unfinished is resumed without redoing what it
//! had done.

use std::time::Duration;

use app::session::Role;
use axum::http::StatusCode;
use engine::Database;
use serde_json::Value;

use crate::roles::{Fixture, fixture};

async fn start_waiting(f: &Fixture, id: &str) {
    let (status, body) = f.call(Role::Admin, "/api/fn/instances/start",
        &format!(
            "name=HumanInteraction&input=%7B%22request%22%3A%22x%22%2C%22timeout_ms%22%3A600000%7D&instance_id={id}"
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn status_of(f: &Fixture, id: &str) -> Option<String> {
    let Database::Sqlite(pool) = &f.db else {
        unreachable!()
    };
    sqlx::query_scalar("SELECT status FROM instances WHERE instance_id = ?")
        .bind(id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// Waits (up to 10 s) for an instance to reach `want`: a terminate is a message, applied by the
/// instance's next turn, so it lands a moment after the job records it.
async fn reaches(f: &Fixture, id: &str, want: &str) -> Option<String> {
    let mut status = None;
    for _ in 0..500 {
        status = status_of(f, id).await;
        if status.as_deref() == Some(want) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    status
}

/// Polls the job's progress until it reports finished.
async fn finished(f: &Fixture, job: i64) -> Value {
    for _ in 0..200 {
        let (status, body) = f
            .call(Role::Admin, "/api/fn/bulk/progress", &format!("job={job}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let progress: Value = serde_json::from_str(&body).unwrap();
        if progress["finished"] == true {
            return progress;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("bulk job {job} did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_job_resumes_where_it_stopped_and_progress_is_stored() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let f = fixture().await;
    for id in ["bulk-1", "bulk-2", "bulk-3"] {
        start_waiting(&f, id).await;
    }
    let Database::Sqlite(pool) = &f.db else {
        unreachable!()
    };

    // What a server stopped mid-job leaves behind: the job, one instance recorded as done (it
    // was not really terminated here, which shows it is not redone), two still to do.
    let job: i64 = sqlx::query_scalar(
        "INSERT INTO bulk_jobs (action, reason, actor, target, total, created_ms) \
         VALUES ('terminate', 'interrupted', 'admin-user', 'bulk /instances?id=bulk-', 3, 1) RETURNING id",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO bulk_job_items (job_id, instance_id, outcome) \
         VALUES (?1, 'bulk-1', 'ok'), (?1, 'bulk-2', NULL), (?1, 'bulk-3', NULL)",
    )
    .bind(job)
    .execute(pool)
    .await
    .unwrap();

    let resumed = app::routes::bulk::ssr::resume(f.db.clone(), f.engine.clone())
        .await
        .unwrap();
    assert_eq!(resumed, 1);
    let progress = finished(&f, job).await;
    assert_eq!(
        (&progress["total"], &progress["done"], &progress["failed"]),
        (&Value::from(3), &Value::from(3), &Value::from(0)),
        "{progress}"
    );
    assert_eq!(status_of(&f, "bulk-1").await.as_deref(), Some("Running"));
    assert_eq!(
        reaches(&f, "bulk-2", "Terminated").await.as_deref(),
        Some("Terminated")
    );
    assert_eq!(
        reaches(&f, "bulk-3", "Terminated").await.as_deref(),
        Some("Terminated")
    );
    // Nothing is left to resume.
    let resumed = app::routes::bulk::ssr::resume(f.db.clone(), f.engine.clone())
        .await
        .unwrap();
    assert_eq!(resumed, 0);

    // A job started through the dashboard's server function: stored, run, and its progress
    // read back, including an instance the engine refuses.
    let (status, body) = f.call(Role::Admin, "/api/fn/bulk/run",
        "filter%5Bid_prefix%5D=bulk-&action=Terminate&reason=cleanup&confirmation=terminate%201",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let job: i64 = body.trim().parse().unwrap();
    let progress = finished(&f, job).await;
    assert_eq!(
        (&progress["total"], &progress["done"], &progress["failed"]),
        (&Value::from(1), &Value::from(1), &Value::from(0)),
        "{progress}"
    );
    assert_eq!(
        reaches(&f, "bulk-1", "Terminated").await.as_deref(),
        Some("Terminated")
    );
    let items: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT instance_id, outcome FROM bulk_job_items WHERE job_id = ? ORDER BY instance_id",
    )
    .bind(job)
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(items, vec![("bulk-1".to_owned(), Some("ok".to_owned()))]);

    // An engine refusal is recorded per instance and shown in the progress.
    sqlx::query(
        "INSERT INTO bulk_jobs (action, reason, actor, target, total, created_ms) \
         VALUES ('suspend', 'late', 'admin-user', 'bulk', 1, 1)",
    )
    .execute(pool)
    .await
    .unwrap();
    let late: i64 = sqlx::query_scalar("SELECT MAX(id) FROM bulk_jobs")
        .fetch_one(pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO bulk_job_items (job_id, instance_id) VALUES (?, 'bulk-2')")
        .bind(late)
        .execute(pool)
        .await
        .unwrap();
    app::routes::bulk::ssr::resume(f.db.clone(), f.engine.clone())
        .await
        .unwrap();
    let progress = finished(&f, late).await;
    assert_eq!(progress["failed"], 1, "{progress}");
    let error = progress["errors"][0].as_str().unwrap();
    assert!(error.starts_with("bulk-2: "), "{error}");
    assert!(error.contains("Terminated"), "{error}");

    let (status, _) = f
        .call(Role::Admin, "/api/fn/bulk/progress", "job=999999")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
