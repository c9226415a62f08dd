//! Durable entities, the pure part: identity, typed operations, and the batch executor that runs
//! queued operations against an entity's state (see `shared/docs/entities.md`; rule numbers below
//! are that page's).
//!
//! An entity type is its state ([`Entity`]: `Default` is the state before the first operation).
//! Each operation is a type of its own ([`Operation`]): its fields are its input, its `Output` the
//! result a caller gets, its `Entity` the only entity type it applies to. A call site therefore
//! reads `Add(5)` against an [`EntityKey<Counter>`], and an operation of another entity does not
//! compile there.
//!
//! [`EntityEntry::run_batch`] runs a batch in order from the last committed state (rule 7). A
//! failing operation (an error, a panic, or state that will not serialise) is undone alone: the
//! state returns to its value before it and the signals and starts it issued are dropped, and
//! the operations after it run from the restored state (rule 8). An operation may delete the
//! state; the next one starts from `Default` (rule 13). The runtime commits the batch's outcome,
//! state, results and messages, once.

use std::{
    collections::HashMap,
    fmt,
    marker::PhantomData,
    panic::{AssertUnwindSafe, catch_unwind},
    sync::Arc,
};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    history::{Failure, Json, TimestampMs},
    registry::{decode, encode},
};

/// Longest entity name, in bytes.
pub const MAX_ENTITY_NAME: usize = 128;
/// Longest entity key, in bytes.
pub const MAX_ENTITY_KEY: usize = 256;

/// An entity's address: `@name@key` (rule 1). The name is case-insensitive and kept in lower
/// case; the key is exact and may contain `@`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EntityId {
    name: String,
    key: String,
}

impl EntityId {
    /// Checks and builds an id: a name of letters, digits, `_`, `-` and `.` (at most
    /// [`MAX_ENTITY_NAME`] bytes) and a non-empty key of at most [`MAX_ENTITY_KEY`] bytes without
    /// control characters.
    pub fn new(name: &str, key: &str) -> Result<EntityId, String> {
        if name.is_empty() || name.len() > MAX_ENTITY_NAME {
            return Err(format!(
                "an entity name has 1 to {MAX_ENTITY_NAME} bytes, not {}",
                name.len()
            ));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(format!(
                "an entity name has letters, digits, '_', '-' and '.' only, not {c:?}"
            ));
        }
        if key.is_empty() || key.len() > MAX_ENTITY_KEY {
            return Err(format!(
                "an entity key has 1 to {MAX_ENTITY_KEY} bytes, not {}",
                key.len()
            ));
        }
        if key.chars().any(char::is_control) {
            return Err("an entity key has no control characters".into());
        }
        Ok(EntityId {
            name: name.to_ascii_lowercase(),
            key: key.to_owned(),
        })
    }

    /// Parses `@name@key`.
    pub fn parse(id: &str) -> Result<EntityId, String> {
        let rest = id
            .strip_prefix('@')
            .ok_or_else(|| format!("an entity id reads @name@key, not {id:?}"))?;
        let (name, key) = rest
            .split_once('@')
            .ok_or_else(|| format!("an entity id reads @name@key, not {id:?}"))?;
        EntityId::new(name, key)
    }

    /// The entity type's name, in lower case.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for EntityId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "@{}@{}", self.name, self.key)
    }
}

impl TryFrom<String> for EntityId {
    type Error = String;
    fn try_from(id: String) -> Result<Self, String> {
        EntityId::parse(&id)
    }
}

impl From<EntityId> for String {
    fn from(id: EntityId) -> String {
        id.to_string()
    }
}

/// An entity type. The type is the state: `Default` before the first operation and after a
/// deletion, cloned before each operation so a failing one can be undone.
pub trait Entity: Default + Clone + Serialize + DeserializeOwned + 'static {
    /// The registered name (case-insensitive).
    const NAME: &'static str;
}

/// One operation of an entity type: its fields are its input.
pub trait Operation: Serialize + DeserializeOwned + 'static {
    type Entity: Entity;
    /// The operation's name within its entity type.
    const NAME: &'static str;
    type Output: Serialize + DeserializeOwned;

    fn apply(
        self,
        state: &mut Self::Entity,
        ctx: &mut EntityContext,
    ) -> Result<Self::Output, Failure>;

    /// This operation addressed to `key`: `Add(5).on(&key)`.
    fn on(self, key: &EntityKey<Self::Entity>) -> EntityRequest<Self>
    where
        Self: Sized,
    {
        EntityRequest::new(key, self)
    }
}

/// The address of an entity of type `E`: what typed signals and calls take.
pub struct EntityKey<E> {
    id: EntityId,
    entity: PhantomData<fn() -> E>,
}

impl<E: Entity> EntityKey<E> {
    pub fn new(key: &str) -> Result<EntityKey<E>, String> {
        Ok(EntityKey {
            id: EntityId::new(E::NAME, key)?,
            entity: PhantomData,
        })
    }

    pub fn id(&self) -> &EntityId {
        &self.id
    }
}

impl<E> Clone for EntityKey<E> {
    fn clone(&self) -> Self {
        EntityKey {
            id: self.id.clone(),
            entity: PhantomData,
        }
    }
}

impl<E> fmt::Debug for EntityKey<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EntityKey({})", self.id)
    }
}

/// A typed operation addressed to one entity: what signals and calls take. Built as
/// `Add(5).on(&key)`, or with `#[entity]` as `Counter::add(&key, 5)`; an operation of another
/// entity type does not compile against the key.
#[derive(Debug, Clone)]
pub struct EntityRequest<O: Operation> {
    key: EntityKey<O::Entity>,
    operation: O,
}

impl<O: Operation> EntityRequest<O> {
    pub fn new(key: &EntityKey<O::Entity>, operation: O) -> EntityRequest<O> {
        EntityRequest {
            key: key.clone(),
            operation,
        }
    }

    /// The target.
    pub fn key(&self) -> &EntityKey<O::Entity> {
        &self.key
    }

    pub fn operation(&self) -> &O {
        &self.operation
    }
}

/// An operation on its way to an entity, type-erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRequest {
    pub operation: String,
    pub input: Json,
}

impl OperationRequest {
    /// The request for a typed operation.
    pub fn of<O: Operation>(operation: &O) -> Result<OperationRequest, Failure> {
        Ok(OperationRequest {
            operation: O::NAME.to_owned(),
            input: encode(operation, "the operation's input")?,
        })
    }
}

/// A signal an operation sends: to another entity or itself, now or at a time (rule 10).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingSignal {
    pub target: EntityId,
    pub request: OperationRequest,
    /// Not before this time (rule 6); `None`: at once.
    pub at: Option<TimestampMs>,
}

/// An orchestration an operation starts, when its batch commits (rule 12).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutgoingStart {
    pub name: String,
    pub input: Json,
    pub instance_id: Option<String>,
}

/// What an operation can do besides changing its state.
#[derive(Debug)]
pub struct EntityContext {
    id: EntityId,
    now_ms: TimestampMs,
    delete: bool,
    signals: Vec<OutgoingSignal>,
    starts: Vec<OutgoingStart>,
}

impl EntityContext {
    /// The entity the operation runs on.
    pub fn id(&self) -> &EntityId {
        &self.id
    }

    /// The time the batch runs at (an input: the same on every replay of the batch).
    pub fn now_ms(&self) -> TimestampMs {
        self.now_ms
    }

    /// Deletes the state when the operation succeeds: the entity is absent afterwards, and the
    /// next operation starts from `Default` (rule 13).
    pub fn delete_state(&mut self) {
        self.delete = true;
    }

    /// Signals an entity (this one too) once the batch commits.
    pub fn signal<O: Operation>(&mut self, request: EntityRequest<O>) -> Result<(), Failure> {
        self.signal_at(request, None)
    }

    /// Signals an entity, not before `at` (rule 6).
    pub fn signal_at<O: Operation>(
        &mut self,
        request: EntityRequest<O>,
        at: Option<TimestampMs>,
    ) -> Result<(), Failure> {
        self.signals.push(OutgoingSignal {
            target: request.key.id().clone(),
            request: OperationRequest::of(&request.operation)?,
            at,
        });
        Ok(())
    }

    /// Starts an orchestration once the batch commits; nothing comes back to the entity.
    pub fn start_orchestration<O: crate::registry::Orchestration>(
        &mut self,
        input: &O::Input,
        instance_id: Option<String>,
    ) -> Result<(), Failure> {
        self.starts.push(OutgoingStart {
            name: O::NAME.to_owned(),
            input: encode(input, "the orchestration's input")?,
            instance_id,
        });
        Ok(())
    }
}

/// Most operations an entity remembers in [`RecentOperation`]s.
pub const RECENT_OPERATIONS: usize = 20;

/// One operation an entity ran, for its detail page: kept for the last [`RECENT_OPERATIONS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentOperation {
    pub operation: String,
    /// When its batch ran (ms since the epoch).
    pub at: TimestampMs,
    /// The calling orchestration (`None`: a signal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// The failure's type when it failed (and was undone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

/// `earlier` followed by `batch`, cut to the last [`RECENT_OPERATIONS`].
pub fn remember(
    mut earlier: Vec<RecentOperation>,
    batch: Vec<RecentOperation>,
) -> Vec<RecentOperation> {
    earlier.extend(batch);
    let excess = earlier.len().saturating_sub(RECENT_OPERATIONS);
    earlier.drain(..excess);
    earlier
}

/// What a batch did: the state to commit (`None`: absent), each operation's result in order,
/// and the messages the successful ones sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOutcome {
    pub state: Option<Json>,
    pub results: Vec<Result<Json, Failure>>,
    pub signals: Vec<OutgoingSignal>,
    pub starts: Vec<OutgoingStart>,
}

type OperationFn<E> =
    Arc<dyn Fn(&mut E, &mut EntityContext, &str) -> Result<Json, Failure> + Send + Sync>;
type BatchFn = Arc<
    dyn Fn(&EntityId, Option<&str>, &[OperationRequest], TimestampMs) -> BatchOutcome + Send + Sync,
>;

type CheckFn = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// A registered entity type, type-erased.
#[derive(Clone)]
pub struct EntityEntry {
    operations: Vec<&'static str>,
    /// Whether an input decodes as each operation's type, by operation name.
    checks: Arc<HashMap<&'static str, CheckFn>>,
    run: BatchFn,
}

impl fmt::Debug for EntityEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntityEntry")
            .field("operations", &self.operations)
            .finish_non_exhaustive()
    }
}

impl EntityEntry {
    /// The operation names, sorted.
    pub fn operations(&self) -> &[&'static str] {
        &self.operations
    }

    /// Refuses an operation this type does not have, or an input that does not decode as the
    /// operation's type (a wrong type, a number out of range), with a message for the sender.
    pub fn check(&self, operation: &str, input: &str) -> Result<(), String> {
        match self.checks.get(operation) {
            Some(check) => check(input),
            None => Err(format!(
                "no operation {operation:?}; there are {}",
                self.operations.join(", ")
            )),
        }
    }

    /// Runs `requests` in order against `state` (the committed JSON, `None` when absent) at
    /// `now_ms`.
    pub fn run_batch(
        &self,
        id: &EntityId,
        state: Option<&str>,
        requests: &[OperationRequest],
        now_ms: TimestampMs,
    ) -> BatchOutcome {
        (self.run)(id, state, requests, now_ms)
    }
}

/// The operations of one entity type, gathered for [`crate::registry::Registry::entity`].
pub struct EntityBuilder<E: Entity> {
    operations: HashMap<&'static str, OperationFn<E>>,
    checks: HashMap<&'static str, CheckFn>,
}

impl<E: Entity> Default for EntityBuilder<E> {
    fn default() -> Self {
        EntityBuilder {
            operations: HashMap::new(),
            checks: HashMap::new(),
        }
    }
}

impl<E: Entity> EntityBuilder<E> {
    /// Adds an operation.
    pub fn operation<O: Operation<Entity = E>>(mut self) -> Self {
        self.operations.insert(
            O::NAME,
            Arc::new(|state, ctx, input| {
                let operation: O = decode(input, &format!("the input of operation {}", O::NAME))?;
                let output = operation.apply(state, ctx)?;
                encode(&output, "the operation's result")
            }),
        );
        self.checks.insert(
            O::NAME,
            Arc::new(|input| {
                serde_json::from_str::<O>(input)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }),
        );
        self
    }

    pub(crate) fn build(self) -> EntityEntry {
        let mut names: Vec<&'static str> = self.operations.keys().copied().collect();
        names.sort_unstable();
        let operations = self.operations;
        EntityEntry {
            operations: names,
            checks: Arc::new(self.checks),
            run: Arc::new(move |id, state, requests, now_ms| {
                run_batch::<E>(&operations, id, state, requests, now_ms)
            }),
        }
    }
}

fn run_batch<E: Entity>(
    operations: &HashMap<&'static str, OperationFn<E>>,
    id: &EntityId,
    stored: Option<&str>,
    requests: &[OperationRequest],
    now_ms: TimestampMs,
) -> BatchOutcome {
    let mut results = Vec::with_capacity(requests.len());
    // The committed state, or a failure every operation reports when it cannot be read.
    let (mut state, mut json, unreadable) =
        match stored.map(|s| decode::<E>(s, "the entity's state")) {
            None => (E::default(), None, None),
            Some(Ok(state)) => (state, stored.map(str::to_owned), None),
            Some(Err(failure)) => (E::default(), stored.map(str::to_owned), Some(failure)),
        };
    let mut ctx = EntityContext {
        id: id.clone(),
        now_ms,
        delete: false,
        signals: Vec::new(),
        starts: Vec::new(),
    };
    for request in requests {
        if let Some(failure) = &unreadable {
            results.push(Err(failure.clone()));
            continue;
        }
        let before = state.clone();
        let (signals, starts) = (ctx.signals.len(), ctx.starts.len());
        ctx.delete = false;
        let ran = match operations.get(request.operation.as_str()) {
            None => Err(Failure::new(
                "UnknownOperation",
                format!(
                    "entity {} has no operation {:?}",
                    E::NAME,
                    request.operation
                ),
            )),
            Some(op) => catch_unwind(AssertUnwindSafe(|| {
                op(&mut state, &mut ctx, &request.input)
            }))
            .unwrap_or_else(|payload| {
                Err(Failure::new(
                    "Panicked",
                    format!(
                        "operation {} panicked: {}",
                        request.operation,
                        crate::executor::panic_message(&*payload)
                    ),
                ))
            }),
        };
        // The state after a successful operation must serialise, or the operation failed too.
        let ran = ran.and_then(|output| {
            if ctx.delete {
                Ok((output, None))
            } else {
                Ok((output, Some(encode(&state, "the entity's state")?)))
            }
        });
        match ran {
            Ok((output, after)) => {
                if after.is_none() {
                    state = E::default();
                }
                json = after;
                results.push(Ok(output));
            }
            Err(failure) => {
                state = before;
                ctx.signals.truncate(signals);
                ctx.starts.truncate(starts);
                results.push(Err(failure));
            }
        }
    }
    BatchOutcome {
        state: json,
        results,
        signals: ctx.signals,
        starts: ctx.starts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    struct Counter {
        value: i64,
    }
    impl Entity for Counter {
        const NAME: &'static str = "Counter";
    }

    #[derive(Serialize, Deserialize)]
    struct Add(i64);
    impl Operation for Add {
        type Entity = Counter;
        const NAME: &'static str = "add";
        type Output = i64;
        fn apply(self, state: &mut Counter, ctx: &mut EntityContext) -> Result<i64, Failure> {
            state.value += self.0;
            // Tell a neighbour, so the test can see a failed operation's signals dropped.
            ctx.signal(Note(self.0).on(&EntityKey::<Counter>::new("log").unwrap()))?;
            if state.value > 100 {
                return Err(Failure::new("TooBig", "the counter stops at 100"));
            }
            Ok(state.value)
        }
    }

    #[derive(Serialize, Deserialize)]
    struct Note(i64);
    impl Operation for Note {
        type Entity = Counter;
        const NAME: &'static str = "note";
        type Output = ();
        fn apply(self, _: &mut Counter, _: &mut EntityContext) -> Result<(), Failure> {
            Ok(())
        }
    }

    #[derive(Serialize, Deserialize)]
    struct Boom;
    impl Operation for Boom {
        type Entity = Counter;
        const NAME: &'static str = "boom";
        type Output = ();
        fn apply(self, state: &mut Counter, _: &mut EntityContext) -> Result<(), Failure> {
            state.value = -1;
            panic!("boom");
        }
    }

    #[derive(Serialize, Deserialize)]
    struct Reset;
    impl Operation for Reset {
        type Entity = Counter;
        const NAME: &'static str = "reset";
        type Output = ();
        fn apply(self, _: &mut Counter, ctx: &mut EntityContext) -> Result<(), Failure> {
            ctx.delete_state();
            Ok(())
        }
    }

    fn counter() -> EntityEntry {
        let mut registry = Registry::new();
        registry.entity(
            EntityBuilder::<Counter>::default()
                .operation::<Add>()
                .operation::<Note>()
                .operation::<Boom>()
                .operation::<Reset>(),
        );
        registry.get_entity("COUNTER").unwrap().clone()
    }

    fn op<O: Operation>(o: O) -> OperationRequest {
        OperationRequest::of(&o).unwrap()
    }

    fn id() -> EntityId {
        EntityId::new("Counter", "a").unwrap()
    }

    #[test]
    fn ids_read_at_name_at_key_with_the_name_in_lower_case() {
        let id = EntityId::parse("@Counter@user@example").unwrap();
        assert_eq!((id.name(), id.key()), ("counter", "user@example"));
        assert_eq!(id.to_string(), "@counter@user@example");
        for bad in ["counter@a", "@@a", "@counter@", "@coun ter@a", "@counter"] {
            assert!(EntityId::parse(bad).is_err(), "{bad}");
        }
        assert!(EntityId::new("counter", &"k".repeat(MAX_ENTITY_KEY + 1)).is_err());
        assert!(EntityId::new("counter", "a\nb").is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"@counter@user@example\"");
        assert_eq!(serde_json::from_str::<EntityId>(&json).unwrap(), id);
    }

    #[test]
    fn a_batch_runs_in_order_from_the_committed_state() {
        let outcome = counter().run_batch(
            &id(),
            Some(r#"{"value":10}"#),
            &[op(Add(1)), op(Add(2)), op(Add(3))],
            5,
        );
        let results: Vec<_> = outcome.results.iter().map(|r| r.clone().unwrap()).collect();
        assert_eq!(results, ["11", "13", "16"]);
        assert_eq!(outcome.state.as_deref(), Some(r#"{"value":16}"#));
        assert_eq!(outcome.signals.len(), 3);
        assert_eq!(outcome.signals[0].target.to_string(), "@counter@log");
    }

    #[test]
    fn a_failing_operation_is_undone_alone_with_its_signals() {
        let outcome = counter().run_batch(
            &id(),
            None,
            &[
                op(Add(60)),
                op(Add(50)),
                op(Boom),
                op(Add(30)),
                op(Reset),
                op(Add(7)),
            ],
            5,
        );
        assert_eq!(outcome.results[0], Ok("60".into()));
        assert_eq!(
            outcome.results[1].as_ref().unwrap_err().error_type,
            "TooBig"
        );
        assert_eq!(
            outcome.results[2].as_ref().unwrap_err().error_type,
            "Panicked"
        );
        assert_eq!(outcome.results[3], Ok("90".into()), "from the restored 60");
        assert_eq!(outcome.results[4], Ok("null".into()));
        assert_eq!(
            outcome.results[5],
            Ok("7".into()),
            "from Default after the reset"
        );
        assert_eq!(outcome.state.as_deref(), Some(r#"{"value":7}"#));
        let sent: Vec<_> = outcome
            .signals
            .iter()
            .map(|s| s.request.input.as_str())
            .collect();
        assert_eq!(
            sent,
            ["60", "30", "7"],
            "the failed add's signal is dropped"
        );
    }

    #[test]
    fn a_deleting_last_operation_leaves_the_entity_absent() {
        let outcome = counter().run_batch(&id(), Some(r#"{"value":3}"#), &[op(Reset)], 5);
        assert_eq!(outcome.state, None);
    }

    #[test]
    fn unknown_operations_bad_inputs_and_unreadable_state_fail_each_operation() {
        let entry = counter();
        let unknown = OperationRequest {
            operation: "subtract".into(),
            input: "1".into(),
        };
        let bad_input = OperationRequest {
            operation: "add".into(),
            input: "\"ten\"".into(),
        };
        let outcome = entry.run_batch(&id(), None, &[unknown, bad_input, op(Add(1))], 5);
        assert_eq!(
            outcome.results[0].as_ref().unwrap_err().error_type,
            "UnknownOperation"
        );
        assert_eq!(
            outcome.results[1].as_ref().unwrap_err().error_type,
            "InvalidPayload"
        );
        assert_eq!(outcome.results[2], Ok("1".into()));
        let outcome = entry.run_batch(&id(), Some("not json"), &[op(Add(1))], 5);
        assert_eq!(
            outcome.results[0].as_ref().unwrap_err().error_type,
            "InvalidPayload"
        );
        assert_eq!(outcome.state.as_deref(), Some("not json"), "left as it was");
        assert_eq!(entry.operations(), ["add", "boom", "note", "reset"]);
        assert_eq!(entry.check("add", "-3"), Ok(()));
        assert!(
            entry.check("add", "18446744073709551615").is_err(),
            "beyond i64"
        );
        assert!(entry.check("add", "\"ten\"").is_err());
        assert!(
            entry
                .check("subtract", "1")
                .unwrap_err()
                .contains("add, boom")
        );
    }
}
