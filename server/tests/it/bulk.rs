//! Bulk jobs are engine system orchestrations (`switchyard.Bulk`): started by the dashboard's
//! server function, their progress read from the job instance, hidden from the default instance
//! list; jobs the old runner left unfinished are reported, not lost.

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
async fn finished(f: &Fixture, job: &str) -> Value {
    for _ in 0..400 {
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
async fn a_bulk_job_is_a_system_instance_that_applies_its_verb_and_reports_progress() {
    let _serial = crate::RENDER_LOCK.lock().await;
    let f = fixture().await;
    for id in ["bulk-1", "bulk-2", "bulk-3"] {
        start_waiting(&f, id).await;
    }
    for id in ["bulk-1", "bulk-2", "bulk-3"] {
        assert_eq!(reaches(&f, id, "Running").await.as_deref(), Some("Running"));
    }
    let (status, body) = f.call(Role::Admin, "/api/fn/bulk/run",
        "filter%5Bid_prefix%5D=bulk-&action=Terminate&reason=cleanup&confirmation=terminate%203",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let job: String = serde_json::from_str(&body).unwrap();
    let progress = finished(&f, &job).await;
    assert_eq!(
        (&progress["total"], &progress["done"], &progress["failed"]),
        (&Value::from(3), &Value::from(3), &Value::from(0)),
        "{progress}"
    );
    for id in ["bulk-1", "bulk-2", "bulk-3"] {
        assert_eq!(
            reaches(&f, id, "Terminated").await.as_deref(),
            Some("Terminated")
        );
    }
    // The job is an instance of the system orchestration, with its tags and progress...
    let record = f.engine.get(&job).await.unwrap();
    assert_eq!(record.name, "switchyard.Bulk");
    assert_eq!(record.status, engine::RuntimeStatus::Completed);
    assert_eq!(
        record.tags.get("action").map(String::as_str),
        Some("terminate")
    );
    assert!(record.custom_status.unwrap().contains("\"done\":3"));
    // ...hidden from the default list, shown when asked for by name.
    let (status, body) = f.call(Role::Viewer, "/api/fn/instances/list", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body.contains(&job), "{body}");
    let (status, body) = f
        .call(
            Role::Viewer,
            "/api/fn/instances/list",
            "filter%5Bname%5D=switchyard.Bulk",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(&job), "{body}");

    // Suspending finished instances: the verb applies to none, nothing fails.
    let (status, body) = f
        .call(
            Role::Admin,
            "/api/fn/bulk/run",
            "filter%5Bid_prefix%5D=bulk-&action=Suspend&reason=late&confirmation=",
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let late: String = serde_json::from_str(&body).unwrap();
    let progress = finished(&f, &late).await;
    assert_eq!(
        (&progress["done"], &progress["skipped"], &progress["failed"]),
        (&Value::from(0), &Value::from(3), &Value::from(0)),
        "{progress}"
    );

    // The generic start (an operator's verb) cannot run a bulk job, whatever it is given.
    let input = serde_json::json!({
        "job": {"action": "Terminate", "query": {"statuses": [], "name": null, "created_from": null,
            "created_to": null, "id_prefix": null, "tags": {}, "sort": "Created",
            "descending": false, "page_size": 100, "cursor": null}, "reason": "x", "limit": 10}
    });
    let form = format!(
        "name=switchyard.Bulk&input={}",
        input
            .to_string()
            .replace('%', "%25")
            .replace('&', "%26")
            .replace('#', "%23")
    );
    let (status, body) = f.call(Role::Admin, "/api/fn/instances/start", &form).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("system orchestration"), "{body}");

    // Only bulk jobs have bulk progress.
    let (status, _) = f
        .call(Role::Admin, "/api/fn/bulk/progress", "job=bulk-1")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = f
        .call(Role::Admin, "/api/fn/bulk/progress", "job=nope")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_of_retired_jobs_exists_and_its_report_reads_it() {
    let f = fixture().await;
    let Database::Sqlite(pool) = &f.db else {
        unreachable!()
    };
    // The upgrade's migration keeps them in `retired_bulk_jobs`; reading them back works.
    sqlx::query(
        "INSERT INTO retired_bulk_jobs (id, action, reason, actor, target, total, created_ms, done) \
         VALUES (7, 'terminate', 'r', 'alice', 'bulk /instances', 10, 1, 4)",
    )
    .execute(pool)
    .await
    .unwrap();
    app::routes::bulk::ssr::report_retired(&f.db).await.unwrap();
    let (total, done): (i64, i64) =
        sqlx::query_as("SELECT total, done FROM retired_bulk_jobs WHERE id = 7")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!((total, done), (10, 4));
}
