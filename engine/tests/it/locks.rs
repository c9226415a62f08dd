//! Critical sections on the runtime (entities.md rules 14 to 20): a terminated holder's locks go
//! and the transfers waiting behind them proceed; an operator's forced release (refused for a
//! live holder without force) makes the holder's next call fail with `LockLost`; clean storage
//! releases a lock nobody live holds; the locking rules refuse what a section may not do;
//! scheduled signals from an orchestration wait for the clock. The 100-transfer check is in the
//! conformance suite.

use std::time::Duration;

use engine::{
    ClientError, Clock, Failure, Message, OrchestrationContext, RuntimeStatus,
    entity::EntityKey,
    history::LockOwner,
    samples::{Account, Counter, HelloSequence, Transfer, TransferRequest},
    store::{Holder, Store, WriteOp},
};

use crate::runtime::clocked_runtime;

fn account(key: &str) -> EntityKey<Account> {
    EntityKey::new(key).unwrap()
}

type TestClient = engine::Client<engine::SqliteStore>;

/// Waits until `check` holds for entity `id`'s record (absent counts as unlocked and empty).
async fn until_entity(
    client: &TestClient,
    id: &str,
    check: impl Fn(Option<&engine::store::EntityRecord>) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let record = client.get_entity(id).await.ok();
        if check(record.as_ref()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out on {id}: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn locked_by(record: Option<&engine::store::EntityRecord>) -> Option<&str> {
    record.and_then(|r| r.locked_by.as_deref())
}

/// Locks the accounts it is given, waits for a "go" event, then reads the first balance.
struct HoldAndWait;
impl engine::Orchestration for HoldAndWait {
    const NAME: &'static str = "HoldAndWait";
    type Input = Vec<String>;
    type Output = u64;
    async fn run(ctx: OrchestrationContext, keys: Vec<String>) -> Result<u64, Failure> {
        let accounts: Vec<EntityKey<Account>> = keys.iter().map(|k| account(k)).collect();
        let ids: Vec<_> = accounts.iter().map(EntityKey::id).collect();
        let section = ctx.lock_entities(&ids).await?;
        ctx.wait_for_event_named::<()>("go").await?;
        let balance = ctx.call_entity(Account::balance(&accounts[0])).await?;
        section.release();
        Ok(balance)
    }
}

/// Tries, inside a section, everything a section may not do, and reports each refusal.
struct BreakTheRules;
impl engine::Orchestration for BreakTheRules {
    const NAME: &'static str = "BreakTheRules";
    type Input = ();
    type Output = Vec<String>;
    async fn run(ctx: OrchestrationContext, _: ()) -> Result<Vec<String>, Failure> {
        let (a, b) = (account("rules-a"), account("rules-b"));
        let early = ctx.lock_entities(&[a.id()]);
        let before = ctx.call_entity(Account::balance(&a)).await;
        let section = early.await?;
        let refusals = [
            before.map(drop),
            ctx.call_entity(Account::balance(&b)).await.map(drop),
            ctx.signal_entity(Account::deposit(&a, 1)),
            ctx.lock_entities(&[b.id()]).await.map(drop),
            ctx.call_sub_orchestration::<HelloSequence>(&vec![], None)
                .await
                .map(drop),
        ];
        // Two calls to different locked entities may run at once; a second to the same may not.
        let pending = ctx.call_entity(Account::balance(&a));
        let second = ctx.call_entity(Account::balance(&a)).await.map(drop);
        pending.await?;
        section.release();
        // Outside the section everything is allowed again.
        ctx.call_entity(Account::balance(&b)).await?;
        Ok(refusals
            .into_iter()
            .chain([second])
            .map(|r| match r {
                Ok(()) => "allowed".to_owned(),
                Err(f) => {
                    let inner = f.cause.as_deref().unwrap_or(&f);
                    format!("{}: {}", inner.error_type, inner.message)
                }
            })
            .collect())
    }
}

/// Schedules a signal to a counter a minute ahead.
struct Later;
impl engine::Orchestration for Later {
    const NAME: &'static str = "Later";
    type Input = i64;
    type Output = ();
    async fn run(ctx: OrchestrationContext, at: i64) -> Result<(), Failure> {
        let key = EntityKey::<Counter>::new("later").unwrap();
        ctx.signal_entity_at(Counter::add(&key, 3), Some(at))
    }
}

fn registry() -> engine::Registry {
    let mut registry = engine::samples::registry();
    registry
        .orchestration::<HoldAndWait>()
        .orchestration::<BreakTheRules>()
        .orchestration::<Later>();
    registry
}

fn with_id(id: &str) -> engine::StartOptions {
    engine::StartOptions {
        instance_id: Some(id.to_owned()),
        ..Default::default()
    }
}

async fn finished(client: &TestClient, id: &str) -> engine::store::InstanceRecord {
    client
        .wait_for_completion(id, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{id}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_holders_locks_go_and_the_waiting_transfers_proceed() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, client, _store, _clock) = clocked_runtime(dir.path(), registry()).await;
    for key in ["t-a", "t-b"] {
        client
            .signal_entity(Account::deposit(&account(key), 100), None)
            .await
            .unwrap();
    }
    client
        .start::<HoldAndWait>(&vec!["t-a".into(), "t-b".into()], with_id("holder"))
        .await
        .unwrap();
    until_entity(&client, "@account@t-b", |r| locked_by(r) == Some("holder")).await;
    for t in 0..5 {
        let request = TransferRequest {
            from: "t-a".into(),
            to: "t-b".into(),
            amount: 10,
        };
        client
            .start::<Transfer>(&request, with_id(&format!("waiting-{t}")))
            .await
            .unwrap();
    }
    // Every transfer's lock request waits at the first account, behind the holder.
    until_entity(&client, "@account@t-a", |r| {
        r.is_some_and(|r| r.backlog == 5)
    })
    .await;
    for t in 0..5 {
        let record = client.get(&format!("waiting-{t}")).await.unwrap();
        assert_eq!(
            record.status,
            RuntimeStatus::Running,
            "waiting for the lock"
        );
    }
    client.terminate("holder", "stuck", false).await.unwrap();
    for t in 0..5 {
        let done = finished(&client, &format!("waiting-{t}")).await;
        assert_eq!(done.status, RuntimeStatus::Completed, "{done:?}");
    }
    assert_eq!(
        client.entity_state(&account("t-a")).await.unwrap(),
        Some(Account { balance: 50 })
    );
    assert_eq!(
        client.entity_state(&account("t-b")).await.unwrap(),
        Some(Account { balance: 150 })
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_forced_release_makes_the_holders_next_call_fail_with_lock_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, client, _store, _clock) = clocked_runtime(dir.path(), registry()).await;
    let refused = client
        .release_entity_lock("@account@f", false, "not locked yet")
        .await;
    assert!(
        matches!(
            refused,
            Err(ClientError::EntityNotFound(_) | ClientError::EntityConflict { .. })
        ),
        "{refused:?}"
    );
    client
        .start::<HoldAndWait>(&vec!["f".into()], with_id("live-holder"))
        .await
        .unwrap();
    until_entity(&client, "@account@f", |r| {
        locked_by(r) == Some("live-holder")
    })
    .await;
    let refused = client.release_entity_lock("@account@f", false, "try").await;
    let Err(ClientError::EntityConflict { reason, .. }) = refused else {
        panic!("a live holder's lock needs force: {refused:?}");
    };
    assert!(reason.contains("Running"), "{reason}");
    let purge = client.purge_entity("@account@f", "try").await;
    assert!(
        matches!(purge, Err(ClientError::EntityConflict { .. })),
        "{purge:?}"
    );
    let released = client
        .release_entity_lock("@account@f", true, "operator says so")
        .await
        .unwrap();
    assert_eq!(released, "live-holder");
    until_entity(&client, "@account@f", |r| locked_by(r).is_none()).await;
    client
        .raise_event_raw("live-holder", "go", "null")
        .await
        .unwrap();
    let done = finished(&client, "live-holder").await;
    assert_eq!(done.status, RuntimeStatus::Failed);
    let failure = done.failure.unwrap();
    let cause = failure.cause.as_deref().map(|c| c.error_type.as_str());
    assert_eq!(cause, Some("LockLost"), "{failure:?}");
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_storage_releases_a_lock_nobody_live_holds_and_purge_removes_an_idle_entity() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, client, store, clock) = clocked_runtime(dir.path(), registry()).await;
    client
        .start::<HoldAndWait>(&vec!["live".into()], with_id("alive"))
        .await
        .unwrap();
    // A lock request from an instance that does not exist (as a purged holder would leave).
    let ghost = LockOwner {
        instance_id: "ghost".into(),
        generation: 0,
        section: 1,
    };
    let request = WriteOp::Signal {
        entity_id: "@account@orphan".into(),
        message: Message::EntityLock {
            owner: ghost,
            entity_ids: vec!["@account@orphan".into()],
            position: 0,
            epochs: Vec::new(),
        },
        at: None,
    };
    store
        .commit(&Holder("test".into()), clock.now_ms(), 1_000, &[request])
        .await
        .unwrap();
    until_entity(&client, "@account@orphan", |r| {
        locked_by(r) == Some("ghost")
    })
    .await;
    until_entity(&client, "@account@live", |r| locked_by(r) == Some("alive")).await;
    client
        .signal_entity(Account::deposit(&account("orphan"), 7), None)
        .await
        .unwrap();
    until_entity(&client, "@account@orphan", |r| {
        r.is_some_and(|r| r.backlog == 1)
    })
    .await;
    let cleaned = client.clean_entity_storage().await.unwrap();
    assert_eq!(
        cleaned.locks_released, 1,
        "the ghost's, not the live holder's"
    );
    until_entity(&client, "@account@orphan", |r| {
        r.is_some_and(|r| r.locked_by.is_none() && r.state.as_deref() == Some(r#"{"balance":7}"#))
    })
    .await;
    assert_eq!(
        locked_by(client.get_entity("@account@live").await.ok().as_ref()),
        Some("alive")
    );
    client
        .purge_entity("@account@orphan", "done with it")
        .await
        .unwrap();
    until_entity(&client, "@account@orphan", |r| r.is_none()).await;
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_section_refuses_what_the_locking_rules_forbid() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, client, _store, _clock) = clocked_runtime(dir.path(), registry()).await;
    client
        .start::<BreakTheRules>(&(), with_id("rules"))
        .await
        .unwrap();
    let done = finished(&client, "rules").await;
    assert_eq!(done.status, RuntimeStatus::Completed, "{done:?}");
    let refusals: Vec<String> = serde_json::from_str(done.output.as_deref().unwrap()).unwrap();
    for refusal in &refusals {
        println!("{refusal}");
        assert!(refusal.starts_with("LockingRulesViolation: "), "{refusal}");
    }
    assert_eq!(refusals.len(), 6);
    for (refusal, words) in refusals.iter().zip([
        "before its lock request is granted",
        "only the entities it locked",
        "may not signal",
        "may not lock again",
        "may not start a sub-orchestration",
        "one call per locked entity",
    ]) {
        assert!(refusal.contains(words), "{refusal} should say {words:?}");
    }
    until_entity(&client, "@account@rules-a", |r| locked_by(r).is_none()).await;
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrations_scheduled_signal_waits_for_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let (rt, client, store, clock) = clocked_runtime(dir.path(), registry()).await;
    let at = clock.now_ms() + 60_000;
    client.start::<Later>(&at, with_id("later")).await.unwrap();
    assert_eq!(
        finished(&client, "later").await.status,
        RuntimeStatus::Completed
    );
    assert!(matches!(
        client.get_entity("@counter@later").await,
        Err(ClientError::EntityNotFound(_))
    ));
    assert_eq!(store.next_timer_at(clock.now_ms()).await.unwrap(), Some(at));
    clock.advance_to(at);
    until_entity(&client, "@counter@later", |r| {
        r.is_some_and(|r| r.state.as_deref() == Some(r#"{"value":3}"#))
    })
    .await;
    rt.shutdown().await;
}
