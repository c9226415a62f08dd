//! Durable entities on the runtime: ordering, batching, rollback, deletion, scheduled signals,
//! starts from an operation, and the client's refusals (entities.md rules 1–13).

use std::time::Duration;

use engine::{
    ClientError, Clock, Failure, Runtime, RuntimeOptions, RuntimeStatus,
    entity::{Entity, EntityBuilder, EntityContext, EntityKey, Operation},
    samples::{Counter, HelloSequence},
    store::Store,
};
use serde::{Deserialize, Serialize};

use crate::runtime::{clocked_runtime, open};

/// Who sent what, in the order the entity ran it.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Ledger {
    entries: Vec<(u32, u32)>,
}
impl Entity for Ledger {
    const NAME: &'static str = "Ledger";
}

#[derive(Serialize, Deserialize)]
struct Append {
    sender: u32,
    seq: u32,
}
impl Operation for Append {
    type Entity = Ledger;
    const NAME: &'static str = "append";
    type Output = ();
    fn apply(self, state: &mut Ledger, _: &mut EntityContext) -> Result<(), Failure> {
        state.entries.push((self.sender, self.seq));
        Ok(())
    }
}

/// Starts a greeting with a fixed id.
#[derive(Serialize, Deserialize)]
struct Greet(String);
impl Operation for Greet {
    type Entity = Ledger;
    const NAME: &'static str = "greet";
    type Output = ();
    fn apply(self, _: &mut Ledger, ctx: &mut EntityContext) -> Result<(), Failure> {
        ctx.start_orchestration::<HelloSequence>(&vec!["entity".to_owned()], Some(self.0))
    }
}

fn registry() -> engine::Registry {
    let mut registry = engine::samples::registry();
    registry.entity(
        EntityBuilder::<Ledger>::default()
            .operation::<Append>()
            .operation::<Greet>(),
    );
    registry
}

/// A runtime with `registry` on a fresh database (the directory lives as long as the first
/// value).
async fn started(
    registry: engine::Registry,
) -> (
    tempfile::TempDir,
    Runtime<engine::SqliteStore>,
    engine::Client<engine::SqliteStore>,
) {
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::start(open(dir.path()).await, registry, RuntimeOptions::default());
    let client = rt.client();
    (dir, rt, client)
}

fn counter(key: &str) -> EntityKey<Counter> {
    EntityKey::new(key).unwrap()
}

/// Waits until `read` returns `Some`.
async fn until<T, F: std::future::Future<Output = Option<T>>>(read: impl Fn() -> F) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = read().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn value(client: &engine::Client<engine::SqliteStore>, key: &str) -> Option<i64> {
    let record = client.get_entity(&format!("@counter@{key}")).await.ok()?;
    Some(
        serde_json::from_str::<Counter>(&record.state?)
            .unwrap()
            .value,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_signals_apply_in_send_order_per_sender_in_few_commits() {
    let (_dir, rt, client) = started(registry()).await;
    let ledger: EntityKey<Ledger> = EntityKey::new("main").unwrap();
    let mut senders = tokio::task::JoinSet::new();
    for sender in 0..10u32 {
        let (client, ledger) = (client.clone(), ledger.clone());
        senders.spawn(async move {
            for seq in 0..50u32 {
                client
                    .signal_entity(Append { sender, seq }.on(&ledger), None)
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = senders.join_next().await {
        done.unwrap();
    }
    let entries = until(|| async {
        let record = client.get_entity("@ledger@main").await.ok()?;
        let ledger: Ledger = serde_json::from_str(&record.state?).unwrap();
        (ledger.entries.len() == 500).then_some(ledger.entries)
    })
    .await;
    for sender in 0..10 {
        let seqs: Vec<u32> = entries
            .iter()
            .filter(|(s, _)| *s == sender)
            .map(|(_, q)| *q)
            .collect();
        assert_eq!(
            seqs,
            (0..50).collect::<Vec<_>>(),
            "sender {sender} in send order"
        );
    }
    let stats = rt.stats();
    println!(
        "500 signals from 10 senders: {} entity batches, {} operations, {} commits",
        stats.entity_batches, stats.entity_operations, stats.commits
    );
    assert_eq!(stats.entity_operations, 500);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_operations_run_as_one_batch_with_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    // Queue 1,000 signals before any runtime runs, then let one take them all.
    let holder = engine::store::Holder("loader".into());
    let ops: Vec<_> = (0..1_000)
        .map(|_| engine::store::WriteOp::Signal {
            entity_id: "@counter@batch".into(),
            message: engine::Message::EntityOperation {
                operation: "add".into(),
                input: "1".into(),
                caller: None,
                request_id: None,
            },
            at: None,
        })
        .collect();
    store.commit(&holder, 1, 1, &ops).await.unwrap();
    let rt = Runtime::start(store, registry(), RuntimeOptions::default());
    let client = rt.client();
    let total = until(|| async { value(&client, "batch").await.filter(|v| *v == 1_000) }).await;
    assert_eq!(total, 1_000);
    let stats = rt.stats();
    println!(
        "1000 queued signals: {} entity batch(es), {} commits",
        stats.entity_batches, stats.commits
    );
    assert_eq!(stats.entity_operations, 1_000);
    assert!(stats.entity_batches <= 2, "{stats:?}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_operation_is_undone_alone_and_a_reset_leaves_the_entity_absent() {
    let (_dir, rt, client) = started(registry()).await;
    let key = counter("c");
    for add in [5, i64::MAX, 2] {
        client
            .signal_entity(Counter::add(&key, add), None)
            .await
            .unwrap();
    }
    assert_eq!(
        until(|| async { value(&client, "c").await.filter(|v| *v == 7) }).await,
        7,
        "the overflowing add was undone, the one after it ran"
    );
    let recent = client.get_entity("@counter@c").await.unwrap().recent;
    let outcomes: Vec<(&str, Option<&str>)> = recent
        .iter()
        .map(|r| (r.operation.as_str(), r.failed.as_deref()))
        .collect();
    assert_eq!(
        outcomes,
        [("add", None), ("add", Some("Overflow")), ("add", None)],
        "the recent operations show the failure"
    );
    client
        .signal_entity(Counter::reset(&key), None)
        .await
        .unwrap();
    until(|| async {
        matches!(
            client.get_entity("@Counter@c").await,
            Err(ClientError::EntityNotFound(_))
        )
        .then_some(())
    })
    .await;
    client
        .signal_entity(Counter::add(&key, 1), None)
        .await
        .unwrap();
    assert_eq!(
        until(|| async { value(&client, "c").await }).await,
        1,
        "from the initial state again"
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_signal_waits_for_its_time_on_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, client, store, clock) = clocked_runtime(dir.path(), registry()).await;
    let at = clock.now_ms() + 60_000;
    client
        .signal_entity(Counter::add(&counter("later"), 4), Some(at))
        .await
        .unwrap();
    let record = client.get_entity("@counter@later").await;
    assert!(
        matches!(record, Err(ClientError::EntityNotFound(_))),
        "{record:?}"
    );
    assert_eq!(store.next_timer_at(clock.now_ms()).await.unwrap(), Some(at));
    clock.advance_to(at);
    assert_eq!(until(|| async { value(&client, "later").await }).await, 4);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_starts_an_orchestration_when_its_batch_commits() {
    let (_dir, rt, client) = started(registry()).await;
    client
        .signal_entity(
            Greet("from-entity".into()).on(&EntityKey::new("starter").unwrap()),
            None,
        )
        .await
        .unwrap();
    let done = until(|| async {
        client
            .wait_for_completion("from-entity", Duration::from_millis(50))
            .await
            .ok()
    })
    .await;
    assert_eq!(done.status, RuntimeStatus::Completed);
    assert_eq!(done.output.as_deref(), Some(r#"["Hello, entity!"]"#));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_entity_ids_names_operations_and_inputs_are_refused() {
    let (_dir, rt, client) = started(registry()).await;
    let refused = |r: Result<(), ClientError>| match r {
        Err(ClientError::Invalid { what, reason }) => format!("{what}: {reason}"),
        other => panic!("{other:?}"),
    };
    for (id, op, input) in [
        ("counter@a", "add", "1"),
        ("@counter@", "add", "1"),
        ("@nosuch@a", "add", "1"),
        ("@counter@a", "subtract", "1"),
        ("@counter@a", "add", "{not json"),
        ("@counter@a", "add", "18446744073709551615"),
        ("@counter@a", "add", "\"ten\""),
    ] {
        let message = refused(client.signal_entity_raw(id, op, input, None, None).await);
        println!("{id} {op} {input}: {message}");
    }
    let large = format!("\"{}\"", "x".repeat(300 * 1024));
    assert!(matches!(
        client
            .signal_entity_raw("@counter@a", "add", &large, None, None)
            .await,
        Err(ClientError::PayloadTooLarge { .. })
    ));
    let start = client
        .start::<HelloSequence>(
            &vec![],
            engine::StartOptions {
                instance_id: Some("@counter@a".into()),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(start, Err(ClientError::Invalid { .. })),
        "{start:?}"
    );
    rt.shutdown().await;
}

/// Signals one counter, calls another twice, and reports a call that fails.
struct Tally;
impl engine::Orchestration for Tally {
    const NAME: &'static str = "Tally";
    type Input = i64;
    type Output = (i64, String);
    async fn run(ctx: engine::OrchestrationContext, amount: i64) -> Result<(i64, String), Failure> {
        ctx.signal_entity(Counter::add(&counter("signalled"), amount))?;
        let tally = counter("tally");
        let first = ctx.call_entity(Counter::add(&tally, amount)).await?;
        let second = ctx.call_entity(Counter::add(&tally, amount)).await?;
        let refused = ctx
            .call_entity(Counter::add(&tally, i64::MAX))
            .await
            .expect_err("the counter would overflow");
        let cause = refused.cause.map(|c| c.error_type).unwrap_or_default();
        Ok((first + second, format!("{} <- {cause}", refused.error_type)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestration_calls_entities_for_results_and_signals_them_one_way() {
    let mut registry = registry();
    registry.orchestration::<Tally>();
    let (_dir, rt, client) = started(registry).await;
    client
        .start::<Tally>(
            &5,
            engine::StartOptions {
                instance_id: Some("tally".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let done = client
        .wait_for_completion("tally", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(done.status, RuntimeStatus::Completed, "{done:?}");
    assert_eq!(
        done.output.as_deref(),
        Some(r#"[15,"EntityOperationFailed <- Overflow"]"#),
        "5, then 10; the overflowing call failed and was undone"
    );
    assert_eq!(
        client.entity_state(&counter("tally")).await.unwrap(),
        Some(Counter { value: 10 })
    );
    assert_eq!(
        until(|| async { client.entity_state(&counter("signalled")).await.unwrap() }).await,
        Counter { value: 5 }
    );
    let history = client.history("tally").await.unwrap();
    let kinds: Vec<&str> = history.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "EntityCalled").count(), 3);
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "EntityCallCompleted")
            .count(),
        2
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "EntityCallFailed").count(),
        1
    );
    assert_eq!(kinds.iter().filter(|k| **k == "EntitySignalled").count(), 1);
    rt.shutdown().await;
}

/// Tries to start a child under an entity's address.
struct Sneaky;
impl engine::Orchestration for Sneaky {
    const NAME: &'static str = "Sneaky";
    type Input = ();
    type Output = String;
    async fn run(ctx: engine::OrchestrationContext, _: ()) -> Result<String, Failure> {
        let refused = ctx
            .call_sub_orchestration::<HelloSequence>(&vec![], Some("@counter@x"))
            .await
            .expect_err("an entity's address is no instance id");
        Ok(refused
            .cause
            .map(|c| format!("{}: {}", c.error_type, c.message))
            .unwrap_or(refused.message))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_cannot_start_under_an_entitys_address() {
    let mut registry = registry();
    registry.orchestration::<Sneaky>();
    let (_dir, rt, client) = started(registry).await;
    let id = client
        .start::<Sneaky>(&(), engine::StartOptions::default())
        .await
        .unwrap();
    let done = client
        .wait_for_completion(&id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(done.status, RuntimeStatus::Completed, "{done:?}");
    let output = done.output.unwrap();
    assert!(
        output.contains("StartFailed") && output.contains("'@'"),
        "{output}"
    );
    assert!(matches!(
        client.get_entity("@counter@x").await,
        Err(ClientError::EntityNotFound(_))
    ));
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_are_queried_by_name_key_prefix_and_time_in_pages() {
    let (_dir, rt, client) = started(registry()).await;
    for key in ["eu-1", "eu-2", "eu-3", "us-1"] {
        client
            .signal_entity(Counter::add(&counter(key), 1), None)
            .await
            .unwrap();
    }
    client
        .signal_entity(
            Append { sender: 0, seq: 0 }.on(&EntityKey::new("eu-9").unwrap()),
            None,
        )
        .await
        .unwrap();
    until(|| async { client.entity_state(&counter("us-1")).await.unwrap() }).await;
    until(|| async {
        client
            .entity_state(&EntityKey::<Ledger>::new("eu-9").unwrap())
            .await
            .unwrap()
    })
    .await;
    let query = |name: Option<&str>, prefix: Option<&str>, page_size, cursor: Option<String>| {
        engine::store::EntityQuery {
            name: name.map(str::to_owned),
            key_prefix: prefix.map(str::to_owned),
            page_size,
            cursor,
            ..Default::default()
        }
    };
    let ids = |page: &engine::store::EntityPage| {
        page.entities
            .iter()
            .map(|e| e.entity_id.clone())
            .collect::<Vec<_>>()
    };
    let eu = client
        .query_entities(&query(Some("Counter"), Some("eu-"), 2, None))
        .await
        .unwrap();
    assert_eq!(ids(&eu), ["@counter@eu-1", "@counter@eu-2"]);
    let rest = client
        .query_entities(&query(
            Some("counter"),
            Some("eu-"),
            2,
            eu.next_cursor.clone(),
        ))
        .await
        .unwrap();
    assert_eq!(ids(&rest), ["@counter@eu-3"]);
    assert_eq!(rest.next_cursor, None);
    assert_eq!(rest.entities[0].state.as_deref(), Some(r#"{"value":1}"#));
    let all = client
        .query_entities(&query(None, None, 0, None))
        .await
        .unwrap();
    assert_eq!(all.entities.len(), 5, "{:?}", ids(&all));
    let later = client
        .query_entities(&engine::store::EntityQuery {
            modified_from: Some(i64::MAX / 2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(later.entities.is_empty());
    for bad in [
        query(Some("no such!"), None, 0, None),
        query(None, Some("eu-"), 0, None),
        query(Some("counter"), None, 0, Some("garbage".into())),
    ] {
        assert!(
            matches!(
                client.query_entities(&bad).await,
                Err(ClientError::Invalid { .. })
            ),
            "{bad:?}"
        );
    }
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_signal_with_a_request_id_applies_at_most_once() {
    let (_dir, rt, client) = started(registry()).await;
    let key = counter("once");
    // A client that lost the answer retries with the same id; a new id is a new signal.
    for request_id in ["r-1", "r-1", "r-2", "r-1"] {
        client
            .signal_entity_once(Counter::add(&key, 10), None, request_id)
            .await
            .unwrap();
    }
    client
        .signal_entity(Counter::add(&key, 1), None)
        .await
        .unwrap();
    let total = until(|| async { value(&client, "once").await.filter(|v| *v % 10 == 1) }).await;
    assert_eq!(total, 21, "r-1 once, r-2 once, the plain signal once");
    let refused = client
        .signal_entity_once(Counter::add(&key, 1), None, "")
        .await;
    assert!(
        matches!(refused, Err(ClientError::Invalid { .. })),
        "{refused:?}"
    );
    rt.shutdown().await;
}
