//! One conformance suite for every store, in the style of tower-sessions' shared store tests.
//!
//! Each check is an async function over a [`Harness`] that makes fresh, empty stores;
//! [`store_conformance!`](crate::store_conformance) turns the whole list into `#[tokio::test]`s
//! for one harness, so a new store runs exactly the same checks:
//!
//! ```text
//! mod sqlite {
//!     engine::store_conformance!(crate::SqliteHarness::new());
//! }
//! ```
//!
//! The checks cover the queues (order, cursors, consumption), turns (history, status), timers,
//! activities, every management verb and its refusals, queries (filters, paging, counts), purge,
//! leases and fencing (driven by a [`ManualClock`]), competing consumers (two runtimes on one
//! store), a restart after a holder vanished with work leased, and entity batches. Time never passes by sleeping:
//! the clock is moved.

use std::{
    collections::{BTreeMap, HashSet},
    future::Future,
    sync::Arc,
    time::Duration,
};

use crate::{
    client::{Client, ClientError, StartOptions},
    executor::Action,
    history::{EventKind, HistoryEvent, Message, RuntimeStatus, TimestampMs},
    registry::Event,
    runtime::{Clock, ManualClock, Runtime, RuntimeOptions},
    samples::{self, Approval, ApprovalRequest, HelloN, HelloSequence, HumanInteraction},
    store::{
        Accept, EntityCommit, Holder, InstanceQuery, MessageRef, NewInstance, OpError,
        QueuedMessage, ResilienceStore, Store, StoreAdmin, TurnCommit, WriteOp,
    },
};

/// Makes stores for the suite.
pub trait Harness: Send + Sync + 'static {
    type Store: Store + StoreAdmin + ResilienceStore + Clone;
    /// A fresh, empty, migrated store that no other check uses.
    fn store(&self) -> impl Future<Output = Self::Store> + Send;
}

/// Expands to one `#[tokio::test]` per conformance check, each with a fresh harness from
/// `$harness` (an expression).
#[macro_export]
macro_rules! store_conformance {
    ($harness:expr) => {
        $crate::store_conformance!(@tests $harness;
            queues_deliver_in_order_and_are_consumed_once,
            timers_come_due_with_the_clock,
            activities_are_leased_renewed_and_completed_under_their_fence,
            a_commit_under_an_expired_lease_is_refused_and_the_new_holders_history_is_whole,
            management_verbs_act_in_the_states_that_allow_them_and_refuse_the_rest,
            queries_filter_page_and_count,
            purge_removes_an_instance_and_everything_it_owns,
            competing_runtimes_run_every_instance_exactly_once,
            a_vanished_holders_work_is_taken_over_once_its_leases_run_out,
            entity_batches_commit_state_and_signals_under_the_lease,
            a_locked_entity_keeps_a_transient_row,
            transfers_under_locks_conserve_money_and_never_deadlock,
        );
    };
    (@tests $harness:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                $crate::store::conformance::$check(&$harness).await;
            }
        )*
    };
}

/// Lease length the store-level checks use.
const LEASE_MS: i64 = 30_000;
/// A plausible "now" for the store-level checks.
const T0: TimestampMs = 1_700_000_000_000;
/// How long a check waits for a runtime to make progress (real time, not a timer).
const PATIENCE: Duration = Duration::from_secs(60);

fn holder(name: &str) -> Holder {
    Holder(name.to_owned())
}

fn new_instance(id: &str, now_ms: TimestampMs) -> NewInstance {
    NewInstance {
        instance_id: id.to_owned(),
        name: "Probe".into(),
        version: "1".into(),
        input: "null".into(),
        tags: BTreeMap::new(),
        parent: None,
        scheduled_start_at: None,
        now_ms,
    }
}

fn event(id: u32, kind: EventKind) -> HistoryEvent {
    HistoryEvent {
        id,
        timestamp_ms: T0,
        kind,
    }
}

fn started(id: u32) -> HistoryEvent {
    event(
        id,
        EventKind::ExecutionStarted {
            name: "Probe".into(),
            version: "1".into(),
            input: "null".into(),
            tags: BTreeMap::new(),
            parent: None,
            generation: 0,
        },
    )
}

/// A turn that consumes `consumed` and appends `events` after `history_start` events.
fn turn(
    message: &QueuedMessage,
    history_start: u32,
    events: Vec<HistoryEvent>,
    actions: Vec<Action>,
    status: RuntimeStatus,
) -> WriteOp {
    WriteOp::Turn(TurnCommit {
        instance_id: message.instance_id.clone(),
        fence: message.lease.fence,
        previous_status: if history_start == 0 {
            RuntimeStatus::Pending
        } else {
            RuntimeStatus::Running
        },
        history_start,
        new_events: events,
        status,
        output: status.is_terminal().then(|| "\"done\"".to_owned()),
        failure: None,
        custom_status: None,
        waiting: None,
        consumed: vec![message.at],
        actions,
        now_ms: T0,
    })
}

async fn commit_ok<S: Store>(store: &S, by: &Holder, now: TimestampMs, ops: &[WriteOp]) {
    let (outcomes, _) = store
        .commit(by, now, LEASE_MS, ops)
        .await
        .expect("the commit succeeds");
    for (op, outcome) in ops.iter().zip(outcomes) {
        assert_eq!(outcome, Ok(()), "{op:?}");
    }
}

/// Starts `id` and commits its first turn: `ExecutionStarted`, then `kind`, with `action`.
async fn first_turn<S: Store>(store: &S, by: &Holder, id: &str, kind: EventKind, action: Action) {
    commit_ok(store, by, T0, &[WriteOp::Start(new_instance(id, T0))]).await;
    let start = store.fetch_messages(by, 0, T0, LEASE_MS, 10).await.unwrap();
    let events = vec![started(0), event(1, kind)];
    let op = turn(
        &start.items[0],
        0,
        events,
        vec![action],
        RuntimeStatus::Running,
    );
    commit_ok(store, by, T0, &[op]).await;
}

/// Messages are fetched in order after a cursor, leased, and gone once a turn consumed them.
pub async fn queues_deliver_in_order_and_are_consumed_once<H: Harness>(harness: &H) {
    let store = harness.store().await;
    let a = holder("a");
    let ops = [
        WriteOp::Start(new_instance("q-1", T0)),
        WriteOp::Start(new_instance("q-2", T0)),
        WriteOp::Start(new_instance("q-1", T0)),
    ];
    let (outcomes, effects) = store.commit(&a, T0, LEASE_MS, &ops).await.unwrap();
    assert_eq!(outcomes[..2], [Ok(()), Ok(())]);
    assert_eq!(outcomes[2], Err(OpError::Conflict("q-1".into())));
    assert!(effects.messages);

    let fetched = store.fetch_messages(&a, 0, T0, LEASE_MS, 10).await.unwrap();
    let ids: Vec<&str> = fetched
        .items
        .iter()
        .map(|m| m.instance_id.as_str())
        .collect();
    assert_eq!(ids, ["q-1", "q-2"]);
    assert!(!fetched.full);
    assert!(
        fetched
            .items
            .iter()
            .all(|m| matches!(m.message, Message::Start { .. })
                && m.lease.expires_at == T0 + LEASE_MS)
    );
    let after = store
        .fetch_messages(&a, fetched.scanned_to, T0, LEASE_MS, 10)
        .await
        .unwrap();
    assert!(after.items.is_empty(), "nothing after the cursor");
    let limited = store.fetch_messages(&a, 0, T0, LEASE_MS, 1).await.unwrap();
    assert!(limited.full && limited.items.len() == 1);

    let first = &fetched.items[0];
    commit_ok(
        &store,
        &a,
        T0,
        &[turn(
            first,
            0,
            vec![started(0)],
            Vec::new(),
            RuntimeStatus::Running,
        )],
    )
    .await;
    let loaded = store.load("q-1").await.unwrap().expect("q-1 exists");
    assert_eq!(loaded.status, RuntimeStatus::Running);
    assert_eq!(loaded.history, [started(0)]);
    let left = store.fetch_messages(&a, 0, T0, LEASE_MS, 10).await.unwrap();
    let ids: Vec<&str> = left.items.iter().map(|m| m.instance_id.as_str()).collect();
    assert_eq!(ids, ["q-2"], "the consumed start is gone");

    // A delivery follows the instance's earlier messages.
    let raise = WriteOp::Deliver {
        instance_id: "q-1".into(),
        message: Message::EventRaised {
            name: "Go".into(),
            input: "1".into(),
        },
        accept: Accept::Live,
    };
    commit_ok(&store, &a, T0, &[raise]).await;
    let next = store
        .fetch_messages(&a, left.scanned_to, T0, LEASE_MS, 10)
        .await
        .unwrap();
    assert_eq!(next.items.len(), 1);
    assert!(matches!(&next.items[0].message, Message::EventRaised { name, .. } if name == "Go"));
    assert_eq!(
        next.items[0].lease.fence, first.lease.fence,
        "same holder, same tenure"
    );
    assert!(store.load("nope").await.unwrap().is_none());
}

/// A durable timer is invisible until the clock reaches it.
pub async fn timers_come_due_with_the_clock<H: Harness>(harness: &H) {
    let store = harness.store().await;
    let a = holder("a");
    let create = Action::CreateTimer {
        timer_id: 1,
        fire_at_ms: T0 + 5_000,
    };
    let created = EventKind::TimerCreated {
        fire_at_ms: T0 + 5_000,
    };
    first_turn(&store, &a, "t-1", created, create).await;
    assert!(
        store
            .fetch_due_timers(&a, T0 + 4_999, LEASE_MS, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_timer_at(T0).await.unwrap(), Some(T0 + 5_000));
    let due = store
        .fetch_due_timers(&a, T0 + 5_000, LEASE_MS, 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert!(matches!(
        due[0].message,
        Message::TimerFired { timer_id: 1 }
    ));
    assert!(matches!(due[0].at, MessageRef::Timer(_)));
    // Another holder does not get the timer while `a` holds the instance.
    let b = holder("b");
    assert!(
        store
            .fetch_due_timers(&b, T0 + 5_000, LEASE_MS, 10)
            .await
            .unwrap()
            .is_empty()
    );
    commit_ok(
        &store,
        &a,
        T0 + 5_000,
        &[turn(
            &due[0],
            2,
            vec![event(2, EventKind::TimerFired { timer_id: 1 })],
            Vec::new(),
            RuntimeStatus::Completed,
        )],
    )
    .await;
    assert!(
        store
            .fetch_due_timers(&a, T0 + 9_000, LEASE_MS, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_timer_at(T0).await.unwrap(), None);
}

/// Activities are leased to one holder, renewed while they run, taken over after expiry, and
/// completed only under their current fence.
pub async fn activities_are_leased_renewed_and_completed_under_their_fence<H: Harness>(
    harness: &H,
) {
    let store = harness.store().await;
    let (a, b) = (holder("a"), holder("b"));
    let schedule = Action::ScheduleActivity {
        scheduled_id: 1,
        name: "Work".into(),
        input: "7".into(),
    };
    let scheduled = EventKind::TaskScheduled {
        name: "Work".into(),
        input: "7".into(),
    };
    first_turn(&store, &a, "act-1", scheduled, schedule).await;
    let taken = store
        .fetch_activities(&a, 0, T0, LEASE_MS, 10)
        .await
        .unwrap();
    assert_eq!(taken.items.len(), 1);
    let item = &taken.items[0];
    assert_eq!(
        (item.name.as_str(), item.input.as_str(), item.scheduled_id),
        ("Work", "7", 1)
    );
    let none = store
        .fetch_activities(&b, 0, T0 + 1, LEASE_MS, 10)
        .await
        .unwrap();
    assert!(none.items.is_empty(), "leased to a");
    assert!(
        none.scanned_to >= item.id,
        "skipped, not hidden from the cursor"
    );

    // Renewed halfway, it stays a's past the first expiry.
    let lost = store
        .renew_activities(&a, &[item.id], T0 + LEASE_MS / 2, LEASE_MS)
        .await
        .unwrap();
    assert!(lost.is_empty());
    let still = store
        .fetch_activities(&b, 0, T0 + LEASE_MS + 1, LEASE_MS, 10)
        .await
        .unwrap();
    assert!(still.items.is_empty(), "the renewal holds");

    // Not renewed again, it passes to b with a new fence.
    let later = T0 + 2 * LEASE_MS;
    let moved = store
        .fetch_activities(&b, 0, later, LEASE_MS, 10)
        .await
        .unwrap();
    assert_eq!(moved.items.len(), 1);
    assert_ne!(moved.items[0].lease.fence, item.lease.fence);
    assert_eq!(
        store
            .renew_activities(&a, &[item.id], later, LEASE_MS)
            .await
            .unwrap(),
        [item.id],
        "a learns it lost the activity"
    );

    let complete = |fence| WriteOp::Complete {
        activity_id: item.id,
        fence,
        instance_id: "act-1".into(),
        message: Message::TaskCompleted {
            scheduled_id: 1,
            result: "8".into(),
        },
    };
    let stale = complete(item.lease.fence);
    let (outcomes, _) = store.commit(&a, later, LEASE_MS, &[stale]).await.unwrap();
    assert!(
        matches!(&outcomes[0], Err(OpError::LeaseLost(_))),
        "{outcomes:?}"
    );
    let current = complete(moved.items[0].lease.fence);
    commit_ok(&store, &b, later, &[current]).await;
    assert!(
        store
            .fetch_activities(&b, 0, later, LEASE_MS, 10)
            .await
            .unwrap()
            .items
            .is_empty(),
        "completed activities are gone"
    );
    // The result waits for the instance as a message (the instance's lease is a's, expired).
    let results = store
        .fetch_messages(&b, 0, later, LEASE_MS, 10)
        .await
        .unwrap();
    assert!(matches!(
        results.items.as_slice(),
        [QueuedMessage {
            message: Message::TaskCompleted {
                scheduled_id: 1,
                ..
            },
            ..
        }]
    ));
}

/// Fencing: a holder whose lease expired (the clock moved) has its commit refused, the new
/// holder's turn commits, and the history has no gap and no stale event.
pub async fn a_commit_under_an_expired_lease_is_refused_and_the_new_holders_history_is_whole<
    H: Harness,
>(
    harness: &H,
) {
    let store = harness.store().await;
    let clock = ManualClock::new(T0);
    let (a, b) = (holder("a"), holder("b"));
    commit_ok(
        &store,
        &a,
        clock.now_ms(),
        &[WriteOp::Start(new_instance("f-1", T0))],
    )
    .await;
    let by_a = store
        .fetch_messages(&a, 0, clock.now_ms(), LEASE_MS, 10)
        .await
        .unwrap();
    assert_eq!(by_a.items.len(), 1);
    let seen_by_b = store
        .fetch_messages(&b, 0, clock.now_ms(), LEASE_MS, 10)
        .await
        .unwrap();
    assert!(seen_by_b.items.is_empty(), "a holds f-1");

    // a stalls past its lease; b takes the instance over and runs the turn.
    clock.advance(Duration::from_millis(LEASE_MS as u64 + 1));
    let by_b = store
        .fetch_messages(&b, 0, clock.now_ms(), LEASE_MS, 10)
        .await
        .unwrap();
    assert_eq!(by_b.items.len(), 1);
    assert!(by_b.items[0].lease.fence > by_a.items[0].lease.fence);
    let b_events = vec![started(0), event(1, EventKind::OrchestratorStarted)];
    commit_ok(
        &store,
        &b,
        clock.now_ms(),
        &[turn(
            &by_b.items[0],
            0,
            b_events.clone(),
            Vec::new(),
            RuntimeStatus::Running,
        )],
    )
    .await;

    // a wakes up and commits what it computed: refused, whole.
    let a_turn = turn(
        &by_a.items[0],
        0,
        vec![
            started(0),
            event(1, EventKind::ExecutionCompleted { output: "1".into() }),
        ],
        Vec::new(),
        RuntimeStatus::Completed,
    );
    let discard = WriteOp::Discard {
        instance_id: "f-1".into(),
        fence: by_a.items[0].lease.fence,
        consumed: vec![by_a.items[0].at],
    };
    let (outcomes, effects) = store
        .commit(&a, clock.now_ms(), LEASE_MS, &[a_turn, discard])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [
            Err(OpError::LeaseLost("f-1".into())),
            Err(OpError::LeaseLost("f-1".into()))
        ]
    );
    assert!(effects.finished.is_empty());
    let loaded = store.load("f-1").await.unwrap().unwrap();
    assert_eq!(loaded.status, RuntimeStatus::Running);
    assert_eq!(loaded.history, b_events, "b's history, whole");
    let ids: Vec<u32> = loaded.history.iter().map(|e| e.id).collect();
    assert_eq!(ids, [0, 1], "no gap");

    // A commit by the holder itself after its own lease ran out is refused too.
    clock.advance(Duration::from_millis(LEASE_MS as u64));
    let late = WriteOp::Discard {
        instance_id: "f-1".into(),
        fence: by_b.items[0].lease.fence,
        consumed: Vec::new(),
    };
    let (outcomes, _) = store
        .commit(&b, clock.now_ms(), LEASE_MS, &[late])
        .await
        .unwrap();
    assert_eq!(outcomes, [Err(OpError::LeaseLost("f-1".into()))]);
}

/// A runtime on the harness's store with a manual clock.
struct Engine<S: Store + StoreAdmin + ResilienceStore + Clone> {
    runtime: Runtime<S>,
    client: Client<S>,
    clock: Arc<ManualClock>,
    store: S,
}

impl<S: Store + StoreAdmin + ResilienceStore + Clone> Engine<S> {
    fn start(store: S, clock: Arc<ManualClock>, options: RuntimeOptions) -> Engine<S> {
        let runtime =
            Runtime::start_with_clock(store.clone(), samples::registry(), options, clock.clone());
        let client = runtime.client();
        Engine {
            runtime,
            client,
            clock,
            store,
        }
    }

    async fn on<H: Harness<Store = S>>(harness: &H) -> Engine<S> {
        let clock = Arc::new(ManualClock::new(T0));
        Engine::start(harness.store().await, clock, RuntimeOptions::default())
    }

    /// Waits for `id` to finish without moving the clock.
    async fn done(&self, id: &str) -> crate::store::InstanceRecord {
        match self.client.wait_for_completion(id, PATIENCE).await {
            Ok(done) => done,
            Err(e) => panic!("{id}: {e}"),
        }
    }

    /// Waits for `id` to finish, moving the clock to each stored timer meanwhile.
    async fn finish(&self, id: &str) -> crate::store::InstanceRecord {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::time::Instant::now() < deadline {
            match self
                .client
                .wait_for_completion(id, Duration::from_millis(20))
                .await
            {
                Ok(done) => return done,
                Err(ClientError::Timeout(_)) => {}
                Err(e) => panic!("{id}: {e}"),
            }
            if let Some(at) = self.store.next_timer_at(self.clock.now_ms()).await.unwrap() {
                self.clock.advance_to(at);
            }
        }
        panic!("{id} did not finish: {:?}", self.client.get(id).await);
    }

    async fn status(&self, id: &str) -> RuntimeStatus {
        self.client
            .get(id)
            .await
            .expect("the instance exists")
            .status
    }

    /// Waits until `id` has `status` (the runtime makes progress in real time).
    async fn reach(&self, id: &str, status: RuntimeStatus) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::time::Instant::now() < deadline {
            if self.status(id).await == status {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{id} never became {status}");
    }
}

fn with_id(id: &str) -> StartOptions {
    StartOptions {
        instance_id: Some(id.to_owned()),
        ..StartOptions::default()
    }
}

fn approval(timeout_ms: u64) -> ApprovalRequest {
    ApprovalRequest {
        request: "r".into(),
        timeout: Duration::from_millis(timeout_ms),
    }
}

/// Every management verb in a state that allows it, and its refusal in one that does not
/// (`shared/docs/semantics.md`).
pub async fn management_verbs_act_in_the_states_that_allow_them_and_refuse_the_rest<H: Harness>(
    harness: &H,
) {
    let engine = Engine::on(harness).await;
    let c = &engine.client;
    let approved = Approval {
        approved: true,
        comment: "ok".into(),
    };
    // start: a live id is refused; unknown instances are not found.
    let id = c
        .start::<HumanInteraction>(&approval(60_000), with_id("m-1"))
        .await
        .unwrap();
    assert!(matches!(
        c.start::<HumanInteraction>(&approval(1), with_id("m-1"))
            .await,
        Err(ClientError::Conflict(_))
    ));
    for refused in [
        c.raise_event("nope", &approved).await,
        c.terminate("nope", "x", false).await,
        c.suspend("nope", "x").await,
        c.resume("nope", "x").await,
        c.rewind("nope", "x").await,
    ] {
        assert!(
            matches!(refused, Err(ClientError::NotFound(_))),
            "{refused:?}"
        );
    }
    engine.reach(&id, RuntimeStatus::Running).await;
    // resume is only for suspended instances, rewind only for failed ones, purge only for
    // finished ones.
    assert!(matches!(
        c.resume(&id, "x").await,
        Err(ClientError::WrongState { .. })
    ));
    assert!(matches!(
        c.rewind(&id, "x").await,
        Err(ClientError::WrongState { .. })
    ));
    assert!(matches!(
        c.purge(&id, false).await,
        Err(ClientError::WrongState { .. })
    ));
    // suspend, then an event raised meanwhile waits for the resume.
    c.suspend(&id, "hold").await.unwrap();
    engine.reach(&id, RuntimeStatus::Suspended).await;
    assert!(matches!(
        c.suspend(&id, "again").await,
        Err(ClientError::WrongState { .. })
    ));
    c.raise_event(&id, &approved).await.unwrap();
    c.resume(&id, "go").await.unwrap();
    let done = engine.done(&id).await;
    assert_eq!(done.status, RuntimeStatus::Completed);
    assert!(done.output.unwrap().contains("Approved"));
    // A finished instance: live-only verbs are refused as gone.
    for refused in [
        c.raise_event(&id, &approved).await,
        c.terminate(&id, "x", false).await,
        c.suspend(&id, "x").await,
    ] {
        assert!(
            matches!(refused, Err(ClientError::Gone { .. })),
            "{refused:?}"
        );
    }
    // terminate a live one.
    let t = c
        .start::<HumanInteraction>(&approval(60_000), with_id("m-2"))
        .await
        .unwrap();
    c.terminate(&t, "stop", false).await.unwrap();
    assert_eq!(engine.done(&t).await.status, RuntimeStatus::Terminated);
    // restart: under the same id (finished) and under a new one.
    assert_eq!(c.restart(&t, None).await.unwrap(), t);
    assert!(matches!(
        c.restart(&t, None).await,
        Err(ClientError::Conflict(_))
    ));
    let copy = c.restart(&t, Some("m-2-copy")).await.unwrap();
    for live in [&t, &copy] {
        c.terminate(live, "done", false).await.unwrap();
        assert_eq!(engine.done(live).await.status, RuntimeStatus::Terminated);
    }
    // A timeout fires when the clock gets there.
    let late = c
        .start::<HumanInteraction>(&approval(1_000), with_id("m-3"))
        .await
        .unwrap();
    let escalated = engine.finish(&late).await;
    assert!(escalated.output.unwrap().contains("Escalated"));
    assert!(escalated.completed_at.unwrap() >= T0 + 1_000);
    engine.runtime.shutdown().await;
}

/// Queries filter by status, name, id prefix, tags and time, page without repeats, and counts
/// agree.
pub async fn queries_filter_page_and_count<H: Harness>(harness: &H) {
    let engine = Engine::on(harness).await;
    let c = &engine.client;
    for i in 0..25 {
        let options = StartOptions {
            instance_id: Some(format!("page-{i:02}")),
            tags: BTreeMap::from([("parity".to_owned(), (i % 2).to_string())]),
            scheduled_start_at: None,
        };
        c.start::<HelloSequence>(&vec![format!("n{i}")], options)
            .await
            .unwrap();
    }
    c.start::<HumanInteraction>(&approval(60_000), with_id("other-1"))
        .await
        .unwrap();
    for i in 0..25 {
        engine.done(&format!("page-{i:02}")).await;
    }
    let mut seen = Vec::new();
    let mut query = InstanceQuery {
        statuses: vec![RuntimeStatus::Completed],
        page_size: 10,
        ..InstanceQuery::default()
    };
    let mut pages = 0;
    loop {
        let page = c.query(&query).await.unwrap();
        pages += 1;
        seen.extend(page.instances.into_iter().map(|r| r.instance_id));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => break,
        }
    }
    assert!(pages >= 3, "{pages}");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!((seen.len(), unique.len()), (25, 25));
    let by = |q: InstanceQuery| async move {
        c.query(&InstanceQuery {
            page_size: 100,
            ..q
        })
        .await
        .unwrap()
        .instances
        .len()
    };
    assert_eq!(
        by(InstanceQuery {
            name: Some("HumanInteraction".into()),
            ..InstanceQuery::default()
        })
        .await,
        1
    );
    assert_eq!(
        by(InstanceQuery {
            id_prefix: Some("page-1".into()),
            ..InstanceQuery::default()
        })
        .await,
        10
    );
    let odd = BTreeMap::from([("parity".to_owned(), "1".to_owned())]);
    assert_eq!(
        by(InstanceQuery {
            tags: odd,
            ..InstanceQuery::default()
        })
        .await,
        12
    );
    assert_eq!(
        by(InstanceQuery {
            created_from: Some(T0 + 1),
            ..InstanceQuery::default()
        })
        .await,
        0
    );
    let counts = c.status_counts().await.unwrap();
    assert_eq!(
        counts.get(&RuntimeStatus::Completed),
        Some(&25),
        "{counts:?}"
    );
    let live = counts.get(&RuntimeStatus::Running).copied().unwrap_or(0)
        + counts.get(&RuntimeStatus::Pending).copied().unwrap_or(0);
    assert_eq!(live, 1, "{counts:?}");
    assert_eq!(
        c.count_waiting_for_event(Approval::NAME, 10).await.unwrap(),
        1
    );
    engine.runtime.shutdown().await;
}

/// Purge removes a finished instance with its history; the id can be used again.
pub async fn purge_removes_an_instance_and_everything_it_owns<H: Harness>(harness: &H) {
    let engine = Engine::on(harness).await;
    let c = &engine.client;
    let id = c.start::<HelloN>(&3, with_id("p-1")).await.unwrap();
    engine.done(&id).await;
    assert!(!c.history(&id).await.unwrap().is_empty());
    assert_eq!(c.purge(&id, false).await.unwrap(), 1);
    assert!(matches!(c.get(&id).await, Err(ClientError::NotFound(_))));
    assert!(engine.store.history(&id).await.unwrap().is_empty());
    assert!(matches!(
        c.purge(&id, false).await,
        Err(ClientError::NotFound(_))
    ));
    let counts = c.status_counts().await.unwrap();
    assert_eq!(
        counts.get(&RuntimeStatus::Completed).copied().unwrap_or(0),
        0
    );
    let again = c.start::<HelloN>(&1, with_id("p-1")).await.unwrap();
    assert_eq!(engine.done(&again).await.status, RuntimeStatus::Completed);
    engine.runtime.shutdown().await;
}

/// Checks one hello-N history: every event once, in order, no gap, N calls each completed once.
fn assert_ran_once(id: &str, history: &[HistoryEvent], steps: usize) {
    let ids: Vec<u32> = history.iter().map(|e| e.id).collect();
    let expected: Vec<u32> = (0..history.len() as u32).collect();
    assert_eq!(ids, expected, "{id}: event ids with a gap or a repeat");
    let count = |kind: &str| history.iter().filter(|e| e.kind.name() == kind).count();
    assert_eq!(count("ExecutionStarted"), 1, "{id}");
    assert_eq!(count("ExecutionCompleted"), 1, "{id}");
    assert_eq!(count("TaskScheduled"), steps, "{id}");
    let completed: HashSet<u32> = history
        .iter()
        .filter_map(|e| match e.kind {
            EventKind::TaskCompleted { scheduled_id, .. } => Some(scheduled_id),
            _ => None,
        })
        .collect();
    assert_eq!(
        completed.len(),
        steps,
        "{id}: a call completed twice or not at all"
    );
    assert_eq!(count("TaskCompleted"), steps, "{id}");
}

/// Waits until `n` instances are Completed, as the store counts them.
async fn completed_count<S: Store + StoreAdmin>(store: &S, n: i64) {
    let deadline = tokio::time::Instant::now() + 4 * PATIENCE;
    loop {
        let counts = store.status_counts().await.unwrap();
        let done = counts.get(&RuntimeStatus::Completed).copied().unwrap_or(0);
        if done >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {done} of {n} completed: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two runtimes on one store compete for 1,000 hello-5: nothing is lost and nothing runs twice,
/// as the stored histories show.
pub async fn competing_runtimes_run_every_instance_exactly_once<H: Harness>(harness: &H) {
    const N: usize = 1_000;
    const STEPS: u32 = 5;
    let store = harness.store().await;
    let clock = Arc::new(ManualClock::new(T0));
    let one = Engine::start(store.clone(), clock.clone(), RuntimeOptions::default());
    let two = Engine::start(store.clone(), clock.clone(), RuntimeOptions::default());
    // Starts come through both clients, interleaved.
    for i in 0..N {
        let client = if i % 2 == 0 { &one.client } else { &two.client };
        client
            .start::<HelloN>(&STEPS, with_id(&format!("cc-{i:04}")))
            .await
            .unwrap();
    }
    completed_count(&store, N as i64).await;
    let (a, b) = (one.runtime.stats(), two.runtime.stats());
    for i in 0..N {
        let id = format!("cc-{i:04}");
        let record = store.get(&id).await.unwrap().expect("nothing lost");
        assert_eq!(record.status, RuntimeStatus::Completed, "{id}");
        assert_ran_once(&id, &store.history(&id).await.unwrap(), STEPS as usize);
    }
    let counts = store.status_counts().await.unwrap();
    assert_eq!(counts.get(&RuntimeStatus::Completed), Some(&(N as i64)));
    assert!(
        a.turns > 0 && b.turns > 0,
        "both runtimes worked: {a:?} {b:?}"
    );
    eprintln!(
        "competing runtimes: {N} hello-{STEPS} each Completed once; turns {} + {}, activities {} + {}",
        a.turns, b.turns, a.activities, b.activities
    );
    assert!(
        a.activities > 0 && b.activities > 0,
        "both ran activities: {a:?} {b:?}"
    );
    one.runtime.shutdown().await;
    two.runtime.shutdown().await;
}

/// A holder that vanished (killed) with work leased: a new runtime leaves that work alone while
/// the leases run, and takes it over once they have run out.
pub async fn a_vanished_holders_work_is_taken_over_once_its_leases_run_out<H: Harness>(
    harness: &H,
) {
    const N: usize = 20;
    let store = harness.store().await;
    let clock = Arc::new(ManualClock::new(T0));
    let options = RuntimeOptions {
        lease: Duration::from_secs(30),
        ..RuntimeOptions::default()
    };
    // A dead holder leases the instances' work, as a process killed right after fetching it
    // would leave it.
    for i in 0..N {
        let new = NewInstance {
            name: <HelloN as crate::Orchestration>::NAME.to_owned(),
            version: <HelloN as crate::Orchestration>::VERSION.to_owned(),
            input: "2".into(),
            ..new_instance(&format!("k-{i:02}"), clock.now_ms())
        };
        commit_ok(
            &store,
            &holder("dead"),
            clock.now_ms(),
            &[WriteOp::Start(new)],
        )
        .await;
    }
    let leased = store
        .fetch_messages(&holder("dead"), 0, clock.now_ms(), 30_000, 100)
        .await
        .unwrap();
    assert_eq!(leased.items.len(), N);

    let survivor = Engine::start(store.clone(), clock.clone(), options);
    // While the dead holder's leases run, nothing moves.
    survivor
        .client
        .start::<HelloN>(&1, with_id("fresh"))
        .await
        .unwrap();
    survivor.done("fresh").await;
    assert_eq!(survivor.status("k-00").await, RuntimeStatus::Pending);
    // Once they have run out, the survivor's sweep finds the work and runs all of it once.
    clock.advance(Duration::from_secs(31));
    for i in 0..N {
        let id = format!("k-{i:02}");
        let done = survivor.done(&id).await;
        assert_eq!(done.status, RuntimeStatus::Completed, "{id}");
        assert_ran_once(&id, &store.history(&id).await.unwrap(), 2);
    }
    survivor.runtime.shutdown().await;
}

fn signal(entity_id: &str, input: &str, at: Option<TimestampMs>) -> WriteOp {
    WriteOp::Signal {
        entity_id: entity_id.into(),
        message: Message::EntityOperation {
            operation: "add".into(),
            input: input.into(),
            caller: None,
            request_id: None,
        },
        at,
    }
}

/// Signals queue for an entity in order (a scheduled one as a timer); a batch commits the
/// entity's state, consumes what it ran, queues the signals it sent and starts what it started,
/// under the entity's lease; queries find entities with state by name and key prefix; an absent
/// state removes the entity.
pub async fn entity_batches_commit_state_and_signals_under_the_lease<H: Harness>(harness: &H) {
    let store = harness.store().await;
    let (a, b) = (holder("a"), holder("b"));
    commit_ok(
        &store,
        &a,
        T0,
        &[
            signal("@counter@x", "1", None),
            signal("@counter@x", "2", None),
            signal("@counter@x", "3", Some(T0 + 1_000)),
        ],
    )
    .await;
    assert_eq!(
        store.get_entity("@counter@x").await.unwrap(),
        None,
        "no state yet"
    );
    let queued = store.fetch_messages(&a, 0, T0, LEASE_MS, 10).await.unwrap();
    let inputs: Vec<&str> = queued
        .items
        .iter()
        .map(|m| match &m.message {
            Message::EntityOperation { input, .. } => input.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(inputs, ["1", "2"], "in order; the scheduled one waits");
    assert_eq!(store.next_timer_at(T0).await.unwrap(), Some(T0 + 1_000));
    let batch = |by_fence: u64, state: Option<&str>, consumed: Vec<MessageRef>| {
        WriteOp::EntityBatch(EntityCommit {
            entity_id: "@counter@x".into(),
            fence: by_fence,
            state: state.map(str::to_owned),
            scheduler: None,
            locked_by: None,
            deferred: 0,
            recent: Some(format!(r#"[{{"operation":"add","at":{T0}}}]"#)),
            consumed,
            signals: vec![crate::entity::OutgoingSignal {
                target: crate::entity::EntityId::parse("@counter@y").unwrap(),
                request: crate::entity::OperationRequest {
                    operation: "add".into(),
                    input: "9".into(),
                },
                at: None,
            }],
            starts: vec![new_instance("started-by-x", T0)],
            sends: Vec::new(),
            now_ms: T0,
        })
    };
    let fence = queued.items[0].lease.fence;
    let consumed: Vec<MessageRef> = queued.items.iter().map(|m| m.at).collect();
    // Another holder cannot commit the entity's batch while a holds its lease.
    let (refused, _) = store
        .commit(
            &b,
            T0,
            LEASE_MS,
            &[batch(fence, Some(r#"{"value":3}"#), consumed.clone())],
        )
        .await
        .unwrap();
    assert_eq!(refused, [Err(OpError::LeaseLost("@counter@x".into()))]);
    commit_ok(
        &store,
        &a,
        T0,
        &[batch(fence, Some(r#"{"value":3}"#), consumed)],
    )
    .await;
    let record = store.get_entity("@counter@x").await.unwrap().unwrap();
    assert_eq!(
        (
            record.name.as_str(),
            record.key.as_str(),
            record.state.as_deref()
        ),
        ("counter", "x", Some(r#"{"value":3}"#))
    );
    assert_eq!(record.last_modified, T0);
    assert_eq!(record.backlog, 1, "the scheduled signal");
    let recent: Vec<(&str, TimestampMs)> = record
        .recent
        .iter()
        .map(|r| (r.operation.as_str(), r.at))
        .collect();
    assert_eq!(recent, [("add", T0)], "the recent operations written");
    let query = |name: &str, prefix: &str| crate::store::EntityQuery {
        name: Some(name.into()),
        key_prefix: Some(prefix.into()),
        ..Default::default()
    };
    let found = store.query_entities(&query("counter", "x")).await.unwrap();
    assert_eq!(found.entities, std::slice::from_ref(&record));
    assert_eq!(found.next_cursor, None);
    let none = store.query_entities(&query("counter", "y")).await.unwrap();
    assert!(none.entities.is_empty(), "y has queued work but no state");
    let next = store
        .fetch_messages(&a, queued.scanned_to, T0, LEASE_MS, 10)
        .await
        .unwrap();
    let targets: Vec<&str> = next.items.iter().map(|m| m.instance_id.as_str()).collect();
    assert_eq!(
        targets,
        ["@counter@y", "started-by-x"],
        "the signal and the start"
    );
    // The scheduled signal comes due; a batch that deletes the state removes the entity.
    let due = store
        .fetch_due_timers(&a, T0 + 1_000, LEASE_MS, 10)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    let delete = WriteOp::EntityBatch(EntityCommit {
        entity_id: "@counter@x".into(),
        fence: due[0].lease.fence,
        state: None,
        scheduler: None,
        locked_by: None,
        deferred: 0,
        recent: None,
        consumed: vec![due[0].at],
        signals: Vec::new(),
        starts: Vec::new(),
        sends: Vec::new(),
        now_ms: T0 + 1_000,
    });
    commit_ok(&store, &a, T0 + 1_000, &[delete]).await;
    assert_eq!(store.get_entity("@counter@x").await.unwrap(), None);
    assert_eq!(store.load_entity("@counter@x").await.unwrap(), None);
}

/// A locked entity keeps its row without state (a transient entity) with its holder, waiting
/// messages and scheduler; queries show it only when asked for transient ones, count matches,
/// leave state out on request, and filter locked ones; the batch that unlocks it removes it.
pub async fn a_locked_entity_keeps_a_transient_row<H: Harness>(harness: &H) {
    let store = harness.store().await;
    let a = holder("a");
    commit_ok(
        &store,
        &a,
        T0,
        &[
            signal("@account@a", "1", None),
            signal("@account@b", "1", None),
        ],
    )
    .await;
    let queued = store.fetch_messages(&a, 0, T0, LEASE_MS, 10).await.unwrap();
    let commit = |item: &QueuedMessage, state: Option<&str>, scheduler: Option<&str>| {
        WriteOp::EntityBatch(EntityCommit {
            entity_id: item.instance_id.clone(),
            fence: item.lease.fence,
            state: state.map(str::to_owned),
            scheduler: scheduler.map(str::to_owned),
            locked_by: scheduler.map(|_| "holder-1".to_owned()),
            deferred: u64::from(scheduler.is_some()),
            recent: None,
            consumed: vec![item.at],
            signals: Vec::new(),
            starts: Vec::new(),
            sends: Vec::new(),
            now_ms: T0,
        })
    };
    let scheduler = r#"{"epoch":1}"#;
    commit_ok(
        &store,
        &a,
        T0,
        &[
            commit(&queued.items[0], None, Some(scheduler)),
            commit(&queued.items[1], Some("5"), None),
        ],
    )
    .await;
    let stored = store.load_entity("@account@a").await.unwrap().unwrap();
    assert_eq!(
        (stored.state.as_deref(), stored.scheduler.as_deref()),
        (None, Some(scheduler))
    );
    let record = store.get_entity("@account@a").await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.locked_by.as_deref(), record.backlog),
        (None, Some("holder-1"), 1),
        "a waiting message counts in the backlog"
    );
    let query = |transient: bool| crate::store::EntityQuery {
        name: Some("account".into()),
        include_transient: transient,
        count: true,
        ..Default::default()
    };
    let ids = |page: &crate::store::EntityPage| -> Vec<String> {
        page.entities.iter().map(|e| e.entity_id.clone()).collect()
    };
    let page = store.query_entities(&query(false)).await.unwrap();
    assert_eq!(
        (ids(&page), page.total),
        (vec!["@account@b".to_owned()], Some(1))
    );
    let page = store.query_entities(&query(true)).await.unwrap();
    assert_eq!(page.total, Some(2));
    assert_eq!(ids(&page), ["@account@a", "@account@b"]);
    let locked = store
        .query_entities(&crate::store::EntityQuery {
            locked_only: true,
            include_transient: true,
            without_state: true,
            ..query(true)
        })
        .await
        .unwrap();
    assert_eq!(ids(&locked), ["@account@a"]);
    let b = store
        .query_entities(&crate::store::EntityQuery {
            without_state: true,
            ..query(false)
        })
        .await
        .unwrap();
    assert_eq!(b.entities[0].state, None, "state left out on request");
    // Unlocked with nothing waiting and no state: the row goes.
    commit_ok(&store, &a, T0, &[signal("@account@a", "2", None)]).await;
    let next = store
        .fetch_messages(&a, queued.scanned_to, T0, LEASE_MS, 10)
        .await
        .unwrap();
    commit_ok(&store, &a, T0, &[commit(&next.items[0], None, None)]).await;
    assert_eq!(store.load_entity("@account@a").await.unwrap(), None);
}

/// 100 concurrent transfers among 10 accounts, each under a lock on both accounts, through two
/// competing runtimes (entities.md rules 14 to 17): every transfer completes (sections over
/// overlapping sets take their locks in one sorted order, so none deadlocks), the total is
/// conserved, and once the last unlock has run no account is locked or has anything waiting.
pub async fn transfers_under_locks_conserve_money_and_never_deadlock<H: Harness>(harness: &H) {
    use crate::samples::{Account, Transfer, TransferOutcome};
    const ACCOUNTS: u64 = 10;
    const TRANSFERS: usize = 100;
    const OPENING: u64 = 1_000;
    let store = harness.store().await;
    let clock = Arc::new(ManualClock::new(T0));
    let one = Engine::start(store.clone(), clock.clone(), RuntimeOptions::default());
    let two = Engine::start(store.clone(), clock.clone(), RuntimeOptions::default());
    let account = |i: u64| crate::entity::EntityKey::<Account>::new(&format!("acct-{i}")).unwrap();
    for i in 0..ACCOUNTS {
        one.client
            .signal_entity(Account::deposit(&account(i), OPENING), None)
            .await
            .unwrap();
    }
    // Pairs in both directions; amounts up to 600, which some sources lack.
    let name = |i: u64| format!("acct-{i}");
    let workload = crate::samples::transfer_workload(TRANSFERS, ACCOUNTS, name, 600, 0x9E37_79B9);
    for (t, request) in workload.iter().enumerate() {
        let client = if t % 2 == 0 { &one.client } else { &two.client };
        client
            .start::<Transfer>(request, with_id(&format!("tr-{t:03}")))
            .await
            .unwrap();
    }
    let (mut done, mut refused) = (0, 0);
    for t in 0..TRANSFERS {
        let record = one.done(&format!("tr-{t:03}")).await;
        assert_eq!(record.status, RuntimeStatus::Completed, "{record:?}");
        match serde_json::from_str(record.output.as_deref().unwrap()).unwrap() {
            TransferOutcome::Done { .. } => done += 1,
            TransferOutcome::Refused { .. } => refused += 1,
        }
    }
    let history = store.history("tr-000").await.unwrap();
    let kinds: Vec<&str> = history.iter().map(|e| e.kind.name()).collect();
    for kind in [
        "EntityLockRequested",
        "EntityLockGranted",
        "EntityLocksReleased",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    // The last transfers' unlocks may still be on their way: wait for every account to be free.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let total = loop {
        let mut total = 0;
        let mut busy = Vec::new();
        for i in 0..ACCOUNTS {
            let id = account(i).id().to_string();
            let record = store.get_entity(&id).await.unwrap().expect("an account");
            if record.locked_by.is_some() || record.backlog > 0 {
                busy.push(format!(
                    "{id}: {:?}, backlog {}",
                    record.locked_by, record.backlog
                ));
            }
            let state: Account = serde_json::from_str(&record.state.unwrap()).unwrap();
            total += state.balance;
        }
        if busy.is_empty() {
            break total;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still busy: {busy:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(total, ACCOUNTS * OPENING, "money is conserved");
    assert!(done > 0, "some transfers moved money");
    eprintln!("transfers under locks: {done} done, {refused} refused for funds, total {total}");
    one.runtime.shutdown().await;
    two.runtime.shutdown().await;
}
