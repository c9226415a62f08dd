//! The management client: what the dashboard, the HTTP API and tests call.
//!
//! Every verb validates its input first and answers with a typed [`ClientError`]: unknown
//! instance, wrong state, a running id reused, payload too large, invalid name. Mutations go
//! through the runtime's writer, so they are group-committed with everything else and ordered
//! with the turns they affect. What each verb may do in which state follows
//! `shared/docs/semantics.md`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde::Serialize;

use crate::{
    entity::{Entity, EntityId, EntityKey, EntityRequest, Operation},
    history::{HistoryEvent, LockOwner, Message, ParentInstance, RuntimeStatus, TimestampMs},
    lock::EntityScheduler,
    runtime::{Runtime, Shared, WriteOutcome},
    store::{
        Accept, CompletionBucket, EntityPage, EntityQuery, EntityRecord, InstancePage,
        InstanceQuery, InstanceRecord, NewInstance, OpError, RunawayLimits, Store, StoreAdmin,
        StoreError, WriteOp,
    },
};

/// Longest accepted instance id, orchestration name, event name or tag.
pub const MAX_NAME_LEN: usize = 256;

/// Why a management call was refused or failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("instance {0} not found")]
    NotFound(String),
    /// No entity with this id has state (entities.md rule 13: an absent entity).
    #[error("entity {0} not found")]
    EntityNotFound(String),
    #[error("instance {0} is still running; terminate it or choose another id")]
    Conflict(String),
    #[error("instance {instance_id} is {status}: cannot {action}")]
    WrongState {
        instance_id: String,
        status: RuntimeStatus,
        action: &'static str,
    },
    #[error("instance {instance_id} has already finished ({status}): cannot {action}")]
    Gone {
        instance_id: String,
        status: RuntimeStatus,
        action: &'static str,
    },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("{what} is {size} bytes; the limit is {limit}")]
    PayloadTooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// An entity verb its state does not allow (entities.md, management verbs).
    #[error("entity {entity_id}: {reason}")]
    EntityConflict { entity_id: String, reason: String },
    #[error("timed out waiting for instance {0}")]
    Timeout(String),
    /// Load levelling: the intake is full (`RuntimeOptions::max_live_instances` instances are
    /// live); retry after this many seconds (HTTP: 429 with `Retry-After`).
    #[error("the engine is at its limit of {max} live instances; retry in {retry_after_secs} s")]
    Overloaded { max: u64, retry_after_secs: u64 },
    /// No circuit breaker or limiter by this name is registered.
    #[error("no {kind} named {name:?} is registered")]
    UnknownPrimitive { kind: &'static str, name: String },
    #[error("{0}")]
    Storage(Arc<StoreError>),
}

impl From<StoreError> for ClientError {
    fn from(e: StoreError) -> Self {
        ClientError::Storage(Arc::new(e))
    }
}

fn op_result(outcome: WriteOutcome) -> Result<(), ClientError> {
    match outcome {
        Err(e) => Err(ClientError::Storage(e)),
        Ok(Ok(())) => Ok(()),
        Ok(Err(OpError::NotFound(id))) => Err(ClientError::NotFound(id)),
        Ok(Err(OpError::Conflict(id))) => Err(ClientError::Conflict(id)),
        Ok(Err(e @ OpError::EntityAddress(_))) => Err(ClientError::Invalid {
            what: "instance id",
            reason: e.to_string(),
        }),
        // The client's ops (start, deliver, purge, rewind) take no lease; a refusal would be a
        // bug, reported as a storage problem.
        Ok(Err(e @ OpError::LeaseLost(_))) => Err(ClientError::Storage(Arc::new(
            StoreError::Corrupt(e.to_string()),
        ))),
        Ok(Err(OpError::WrongState {
            instance_id,
            status,
            action,
        })) if status.is_terminal() => Err(ClientError::Gone {
            instance_id,
            status,
            action,
        }),
        Ok(Err(OpError::WrongState {
            instance_id,
            status,
            action,
        })) => Err(ClientError::WrongState {
            instance_id,
            status,
            action,
        }),
    }
}

/// Checks a name-like string: non-empty, bounded, printable.
pub fn validate_name(what: &'static str, value: &str) -> Result<(), ClientError> {
    let reason = if value.trim().is_empty() {
        "must not be empty"
    } else if value.len() > MAX_NAME_LEN {
        "is longer than 256 bytes"
    } else if value.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(ClientError::Invalid {
        what,
        reason: reason.into(),
    })
}

/// What [`Client::clean_entity_storage`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CleanedStorage {
    /// Orphaned locks released (their holder was not live).
    pub locks_released: u64,
}

/// Longest reason an operator may give, in bytes.
pub const MAX_REASON_LEN: usize = 1024;

/// Checks an operator's reason: bounded, no control characters but newlines.
pub fn validate_reason(reason: &str) -> Result<(), ClientError> {
    let why = if reason.len() > MAX_REASON_LEN {
        "is longer than 1,024 bytes"
    } else if reason.chars().any(|c| c.is_control() && c != '\n') {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(ClientError::Invalid {
        what: "reason",
        reason: why.into(),
    })
}

/// Options for [`Client::start`].
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// The instance id; a new UUID-like id when absent.
    pub instance_id: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// Start no earlier than this time.
    pub scheduled_start_at: Option<TimestampMs>,
}

/// Management operations on one runtime's instances.
pub struct Client<S: Store> {
    shared: Arc<Shared<S>>,
}

impl<S: Store> Clone for Client<S> {
    fn clone(&self) -> Self {
        Client {
            shared: self.shared.clone(),
        }
    }
}

impl<S: Store> std::fmt::Debug for Client<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl<S: Store> Client<S> {
    /// A client over a runtime's shared state (the system activities build theirs so).
    pub(crate) fn from_shared(shared: Arc<Shared<S>>) -> Self {
        Client { shared }
    }
}

/// The client is built from the runtime here, so the runtime does not depend on its client.
impl<S: Store + StoreAdmin + Clone> Runtime<S> {
    /// The management client for this runtime.
    pub fn client(&self) -> Client<S> {
        Client {
            shared: self.shared().clone(),
        }
    }
}

impl<S: Store + StoreAdmin> Client<S> {
    fn check_payload(&self, what: &'static str, json: &str) -> Result<(), ClientError> {
        let limit = self.shared.options.max_payload_bytes;
        if json.len() > limit {
            return Err(ClientError::PayloadTooLarge {
                what,
                size: json.len(),
                limit,
            });
        }
        serde_json::from_str::<serde::de::IgnoredAny>(json).map_err(|e| ClientError::Invalid {
            what,
            reason: format!("not valid JSON: {e}"),
        })?;
        Ok(())
    }

    /// Whether the runtime behind this client can do its work (for readiness probes).
    pub fn health(&self) -> crate::runtime::Health {
        self.shared.health.report()
    }

    /// What this process's runtime has done so far: counters and latencies (for metrics).
    pub fn stats(&self) -> crate::RuntimeStats {
        self.shared.stats_snapshot()
    }

    /// Registered entity types (lower case, sorted) with their operations (sorted).
    pub fn entity_types(&self) -> Vec<(String, Vec<&'static str>)> {
        let registry = &self.shared.registry;
        registry
            .entity_names()
            .into_iter()
            .filter_map(|name| {
                let entry = registry.get_entity(name)?;
                Some((name.to_owned(), entry.operations().to_vec()))
            })
            .collect()
    }

    /// Entity batches this runtime has committed: a number that moves whenever an entity
    /// changes here, for live pages.
    pub fn entity_batches(&self) -> u64 {
        self.shared
            .stats
            .entity_batches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The JSON Schema of orchestration `name`'s input, when it was described
    /// ([`crate::schema::describe`]).
    pub fn input_schema(&self, name: &str) -> Option<serde_json::Value> {
        self.shared.registry.input_schema(name).cloned()
    }

    /// Registered orchestration names, without the system ones (which only the engine starts).
    pub fn orchestration_names(&self) -> Vec<&'static str> {
        let mut names = self.shared.registry.orchestration_names();
        names.retain(|name| !crate::system::is_system(name));
        names
    }

    /// Starts orchestration `name` with `input` (JSON text). Returns the instance id.
    ///
    /// System orchestrations are refused: they are started by their own verbs
    /// ([`start_bulk`](Self::start_bulk)), which the dashboard guards with their own role checks,
    /// so the generic start (an operator's verb) cannot run a bulk job.
    pub async fn start_raw(
        &self,
        name: &str,
        input: &str,
        options: StartOptions,
    ) -> Result<String, ClientError> {
        validate_name("orchestration name", name)?;
        if crate::system::is_system(name) {
            return Err(ClientError::Invalid {
                what: "orchestration name",
                reason: format!("{name} is a system orchestration; the engine starts it"),
            });
        }
        self.start_registered(name, input, options).await
    }

    /// Starts a bulk job (the system orchestration `switchyard.Bulk`). Returns the job's id.
    pub async fn start_bulk(
        &self,
        job: crate::system::BulkJob,
        options: StartOptions,
    ) -> Result<String, ClientError> {
        use crate::{Orchestration, system::Bulk};
        let input = to_json("input", &crate::system::BulkState::from(job))?;
        self.start_registered(Bulk::NAME, &input, options).await
    }

    async fn start_registered(
        &self,
        name: &str,
        input: &str,
        options: StartOptions,
    ) -> Result<String, ClientError> {
        let Some(entry) = self.shared.registry.get_orchestration(name) else {
            return Err(ClientError::Invalid {
                what: "orchestration name",
                reason: format!("no orchestration named {name:?} is registered"),
            });
        };
        self.check_payload("input", input)?;
        entry
            .validate(input)
            .map_err(|reason| ClientError::Invalid {
                what: "input",
                reason,
            })?;
        for (k, v) in &options.tags {
            validate_name("tag name", k)?;
            if v.len() > MAX_NAME_LEN {
                return Err(ClientError::Invalid {
                    what: "tag value",
                    reason: format!("the value of {k:?} is longer than 256 bytes"),
                });
            }
        }
        let now_ms = self.shared.clock.now_ms();
        let instance_id = match options.instance_id {
            Some(id) => {
                validate_name("instance id", &id)?;
                if id.starts_with('@') {
                    return Err(ClientError::Invalid {
                        what: "instance id",
                        reason: "must not start with '@': such ids address entities (@name@key)"
                            .into(),
                    });
                }
                id
            }
            None => new_instance_id(now_ms),
        };
        let new = NewInstance {
            instance_id: instance_id.clone(),
            name: name.to_owned(),
            version: entry.version.to_owned(),
            input: input.to_owned(),
            tags: options.tags,
            parent: None::<ParentInstance>,
            scheduled_start_at: options.scheduled_start_at,
            now_ms,
        };
        let intake = &self.shared.resilience.intake;
        intake
            .admit()
            .map_err(|retry_after_secs| ClientError::Overloaded {
                max: intake.max().unwrap_or(0),
                retry_after_secs,
            })?;
        op_result(self.shared.start(new).await)?;
        intake.started();
        Ok(instance_id)
    }

    /// Starts `O` as the singleton `key`: at most one live (pending, running or suspended)
    /// instance per key. The key is the instance id, so the store's one insert decides: a
    /// second start while one is live gets [`ClientError::Conflict`] naming it, with no
    /// check-then-start race (resilience.md, "Singletons"); once it has finished, the key
    /// starts afresh.
    pub async fn start_singleton<O: crate::Orchestration>(
        &self,
        key: &str,
        input: &O::Input,
        tags: BTreeMap<String, String>,
    ) -> Result<String, ClientError> {
        let options = StartOptions {
            instance_id: Some(key.to_owned()),
            tags,
            scheduled_start_at: None,
        };
        self.start::<O>(input, options).await
    }

    /// This process's limiters, breakers, concurrency limits and intake, now.
    pub fn resilience(&self) -> crate::resilience::view::ResilienceSnapshot {
        self.shared.resilience.snapshot()
    }

    /// What every process on the store published at or after `since` (this one included), by
    /// process name; snapshots that do not parse are skipped with a warning.
    pub async fn published_resilience(
        &self,
        since: TimestampMs,
    ) -> Result<Vec<crate::resilience::view::ResilienceSnapshot>, ClientError>
    where
        S: crate::store::ResilienceStore,
    {
        let rows = self.shared.store.published(since).await?;
        Ok(rows
            .into_iter()
            .filter_map(|row| match serde_json::from_str(&row.snapshot) {
                Ok(snapshot) => Some(snapshot),
                Err(e) => {
                    tracing::warn!(process = %row.process, error = %e, "skipping a resilience snapshot that does not parse");
                    None
                }
            })
            .collect())
    }

    /// An operator's verb on this process's breaker `name`, with a reason recorded on its
    /// transition. Returns the breaker after it.
    pub fn act_on_breaker(
        &self,
        name: &str,
        action: crate::resilience::view::BreakerAction,
        reason: &str,
    ) -> Result<crate::resilience::view::BreakerView, ClientError> {
        validate_reason(reason)?;
        let breaker =
            self.shared
                .resilience
                .breaker(name)
                .ok_or_else(|| ClientError::UnknownPrimitive {
                    kind: "circuit breaker",
                    name: name.chars().take(MAX_NAME_LEN).collect(),
                })?;
        breaker.act(action, reason);
        tracing::info!(breaker = name, action = %action, "breaker changed by an operator");
        Ok(breaker.view())
    }

    /// Signals an entity: queues `operation` for it (the first operation brings it into being),
    /// now or not before `at` (entities.md rules 5, 6 and 10). Nothing comes back; a failure
    /// shows in the log.
    pub async fn signal_entity<O: Operation>(
        &self,
        request: EntityRequest<O>,
        at: Option<TimestampMs>,
    ) -> Result<(), ClientError> {
        let input = to_json("operation input", request.operation())?;
        self.signal_entity_raw(&request.key().id().to_string(), O::NAME, &input, at, None)
            .await
    }

    /// [`Client::signal_entity`] at most once: a second signal with the same `request_id` to
    /// the same entity is dropped (entities.md rule 5), so a client may retry a signal whose
    /// answer it lost. The entity remembers its last 1,000 request ids.
    pub async fn signal_entity_once<O: Operation>(
        &self,
        request: EntityRequest<O>,
        at: Option<TimestampMs>,
        request_id: &str,
    ) -> Result<(), ClientError> {
        let input = to_json("operation input", request.operation())?;
        let id = request.key().id().to_string();
        self.signal_entity_raw(&id, O::NAME, &input, at, Some(request_id))
            .await
    }

    /// The untyped signal, for the dashboard and the JSON API: refuses an id that is not
    /// `@name@key`, an entity type or operation that is not registered, and an input that is
    /// not JSON or too large.
    pub async fn signal_entity_raw(
        &self,
        entity_id: &str,
        operation: &str,
        input: &str,
        at: Option<TimestampMs>,
        request_id: Option<&str>,
    ) -> Result<(), ClientError> {
        let id = parse_entity_id(entity_id)?;
        if let Some(request_id) = request_id {
            validate_name("request id", request_id)?;
        }
        let Some(entry) = self.shared.registry.get_entity(id.name()) else {
            return Err(ClientError::Invalid {
                what: "entity name",
                reason: format!("no entity named {:?} is registered", id.name()),
            });
        };
        if !entry.operations().contains(&operation) {
            return Err(ClientError::Invalid {
                what: "operation",
                reason: format!(
                    "entity {} has no operation {operation:?}; it has {}",
                    id.name(),
                    entry.operations().join(", ")
                ),
            });
        }
        self.check_payload("input", input)?;
        // A wrongly typed input (a string for a number, a number out of range) is the sender's
        // mistake: refused here rather than failing the operation later, out of sight.
        entry
            .check(operation, input)
            .map_err(|reason| ClientError::Invalid {
                what: "input",
                reason,
            })?;
        self.send_to_entity(
            id.to_string(),
            Message::EntityOperation {
                operation: operation.to_owned(),
                input: input.to_owned(),
                caller: None,
                request_id: request_id.map(str::to_owned),
            },
            at,
        )
        .await
    }

    async fn send_to_entity(
        &self,
        entity_id: String,
        message: Message,
        at: Option<TimestampMs>,
    ) -> Result<(), ClientError> {
        let op = WriteOp::Signal {
            entity_id,
            message,
            at,
        };
        op_result(self.shared.write(op).await)
    }

    /// Purges an entity (an operator's verb, entities.md): refused while it is locked or has
    /// messages queued (`EntityConflict`). The removal runs as the entity's next batch, so an
    /// operation that arrives first brings it back instead.
    pub async fn purge_entity(&self, entity_id: &str, reason: &str) -> Result<(), ClientError> {
        let record = self.get_entity(entity_id).await?;
        validate_reason(reason)?;
        if let Some(holder) = &record.locked_by {
            return Err(ClientError::EntityConflict {
                entity_id: record.entity_id,
                reason: format!("it is locked by {holder}; release the lock first"),
            });
        }
        if record.backlog > 0 {
            return Err(ClientError::EntityConflict {
                entity_id: record.entity_id,
                reason: format!("{} messages are queued for it", record.backlog),
            });
        }
        let message = Message::EntityPurge {
            reason: reason.to_owned(),
        };
        self.send_to_entity(record.entity_id, message, None).await
    }

    /// Releases an entity's lock (an operator's verb, entities.md rule 18): refused when it is
    /// not locked, or when the holder is still live (Pending, Running, Suspended) unless
    /// `force`. The holder's later calls fail with `LockLost`. Returns the holder released.
    pub async fn release_entity_lock(
        &self,
        entity_id: &str,
        force: bool,
        reason: &str,
    ) -> Result<String, ClientError> {
        let id = parse_entity_id(entity_id)?.to_string();
        validate_reason(reason)?;
        let holder = self.lock_holder(&id).await?;
        let Some(holder) = holder else {
            return Err(ClientError::EntityConflict {
                entity_id: id,
                reason: "it is not locked".into(),
            });
        };
        if !force && let Some(status) = self.live_status(&holder.instance_id).await? {
            return Err(ClientError::EntityConflict {
                entity_id: id,
                reason: format!(
                    "its holder {} is {status}; release it with force, or end the holder",
                    holder.instance_id
                ),
            });
        }
        let instance_id = holder.instance_id.clone();
        let message = Message::EntityForceUnlock {
            holder,
            reason: reason.to_owned(),
        };
        self.send_to_entity(id, message, None).await?;
        Ok(instance_id)
    }

    /// Clean entity storage (entities.md rule 20): releases the locks whose holder is neither
    /// Pending, Running nor Suspended (failed, terminated, purged, gone); live holders' locks
    /// are never touched. Pages through every locked entity; returns what it did. Part (a) of the
    /// rule, removing empty entities, has nothing to do here: a row without state, lock or
    /// waiting messages is deleted by the batch that empties it (rule 13).
    pub async fn clean_entity_storage(&self) -> Result<CleanedStorage, ClientError> {
        let mut cleaned = CleanedStorage::default();
        let mut cursor = None;
        loop {
            let page = self
                .shared
                .store
                .query_entities(&EntityQuery {
                    include_transient: true,
                    without_state: true,
                    locked_only: true,
                    page_size: 1000,
                    cursor: cursor.take(),
                    ..EntityQuery::default()
                })
                .await?;
            for record in &page.entities {
                let Some(holder) = self.lock_holder(&record.entity_id).await? else {
                    continue;
                };
                if self.live_status(&holder.instance_id).await?.is_some() {
                    continue;
                }
                let message = Message::EntityForceUnlock {
                    holder,
                    reason: "clean storage: the holder is no longer live".into(),
                };
                self.send_to_entity(record.entity_id.clone(), message, None)
                    .await?;
                cleaned.locks_released += 1;
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        Ok(cleaned)
    }

    /// The current lock holder of an entity, from its stored scheduler.
    async fn lock_holder(&self, entity_id: &str) -> Result<Option<LockOwner>, ClientError> {
        let stored = self.shared.store.load_entity(entity_id).await?;
        let scheduler = stored
            .and_then(|s| s.scheduler)
            .map(|json| serde_json::from_str::<EntityScheduler>(&json))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("the lock of {entity_id}: {e}")))?;
        Ok(scheduler.and_then(|s| s.lock).map(|l| l.owner))
    }

    /// The status of an instance if it is live (Pending, Running or Suspended).
    async fn live_status(&self, instance_id: &str) -> Result<Option<RuntimeStatus>, ClientError> {
        Ok(self
            .shared
            .store
            .get(instance_id)
            .await?
            .map(|r| r.status)
            .filter(|s| !s.is_terminal() && *s != RuntimeStatus::ContinuedAsNew))
    }

    /// An entity's last committed state (entities.md rule 3: never a value in the middle of an
    /// operation; it may be stale).
    pub async fn get_entity(&self, entity_id: &str) -> Result<EntityRecord, ClientError> {
        let id = parse_entity_id(entity_id)?.to_string();
        self.shared
            .store
            .get_entity(&id)
            .await?
            .ok_or(ClientError::EntityNotFound(id))
    }

    /// A page of the entities that have state, in id order (entities.md rule 19). Refuses a
    /// name that no entity could have, a key prefix without a name or longer than a key, a
    /// reversed time range and a cursor that is not an entity id.
    pub async fn query_entities(&self, query: &EntityQuery) -> Result<EntityPage, ClientError> {
        let mut query = query.clone();
        if let Some(name) = &query.name {
            let id = EntityId::new(name, "k").map_err(|reason| ClientError::Invalid {
                what: "entity name",
                reason,
            })?;
            query.name = Some(id.name().to_owned());
        }
        if let Some(prefix) = &query.key_prefix {
            if query.name.is_none() {
                return Err(ClientError::Invalid {
                    what: "key prefix",
                    reason: "filters keys of one entity type: give the name too".into(),
                });
            }
            if prefix.len() > crate::entity::MAX_ENTITY_KEY || prefix.chars().any(char::is_control)
            {
                return Err(ClientError::Invalid {
                    what: "key prefix",
                    reason: "is longer than a key or has control characters".into(),
                });
            }
        }
        if let (Some(from), Some(to)) = (query.modified_from, query.modified_to)
            && from > to
        {
            return Err(ClientError::Invalid {
                what: "modified range",
                reason: "the start is after the end".into(),
            });
        }
        if let Some(cursor) = &query.cursor {
            EntityId::parse(cursor).map_err(|_| ClientError::Invalid {
                what: "cursor",
                reason: "not a cursor returned by a previous page".into(),
            })?;
        }
        Ok(self.shared.store.query_entities(&query).await?)
    }

    /// An entity's last committed state, typed; `None` while it is absent.
    pub async fn entity_state<E: Entity>(
        &self,
        key: &EntityKey<E>,
    ) -> Result<Option<E>, ClientError> {
        match self.get_entity(&key.id().to_string()).await {
            Ok(record) => record
                .state
                .map(|state| serde_json::from_str(&state))
                .transpose()
                .map_err(|e| StoreError::Corrupt(format!("the state of {}: {e}", key.id())).into()),
            Err(ClientError::EntityNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Typed start: `client.start::<HelloChain>(&input, options)`.
    pub async fn start<O: crate::Orchestration>(
        &self,
        input: &O::Input,
        options: StartOptions,
    ) -> Result<String, ClientError> {
        let json = to_json("input", input)?;
        self.start_raw(O::NAME, &json, options).await
    }

    /// The instance's summary.
    pub async fn get(&self, instance_id: &str) -> Result<InstanceRecord, ClientError> {
        self.shared
            .store
            .get(instance_id)
            .await?
            .ok_or_else(|| ClientError::NotFound(instance_id.to_owned()))
    }

    /// The instance's history (current execution).
    pub async fn history(&self, instance_id: &str) -> Result<Vec<HistoryEvent>, ClientError> {
        self.get(instance_id).await?;
        Ok(self.shared.store.history(instance_id).await?)
    }

    /// A page of instances matching `query`.
    pub async fn query(&self, query: &InstanceQuery) -> Result<InstancePage, ClientError> {
        if let Some(cursor) = &query.cursor
            && cursor
                .split_once('|')
                .is_none_or(|(ts, _)| ts.parse::<i64>().is_err())
        {
            return Err(ClientError::Invalid {
                what: "cursor",
                reason: "not a cursor returned by a previous page".into(),
            });
        }
        if let (Some(from), Some(to)) = (query.created_from, query.created_to)
            && from > to
        {
            return Err(ClientError::Invalid {
                what: "created range",
                reason: "the start is after the end".into(),
            });
        }
        // Filters reach the store's query language (a JSON path for tags): only printable,
        // bounded text gets there.
        if let Some(name) = &query.name {
            validate_name("orchestration name", name)?;
        }
        if let Some(prefix) = &query.id_prefix {
            validate_name("instance id prefix", prefix)?;
        }
        for (key, value) in &query.tags {
            validate_name("tag name", key)?;
            if value.len() > MAX_NAME_LEN || value.chars().any(char::is_control) {
                return Err(ClientError::Invalid {
                    what: "tag value",
                    reason: "must be at most 256 bytes without control characters".into(),
                });
            }
        }
        Ok(self.shared.store.query(query).await?)
    }

    /// Instance counts per status, maintained by the store.
    pub async fn status_counts(&self) -> Result<BTreeMap<RuntimeStatus, i64>, ClientError> {
        Ok(self.shared.store.status_counts().await?)
    }

    /// Live instances waiting for event `name` (the approvals inbox).
    pub async fn waiting_for_event(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<InstanceRecord>, ClientError> {
        validate_name("event name", name)?;
        Ok(self.shared.store.waiting_for_event(name, limit).await?)
    }

    /// Live instances past any of `limits`, worst first; see [`StoreAdmin::suspected_runaways`].
    pub async fn suspected_runaways(
        &self,
        limits: &RunawayLimits,
        limit: u32,
    ) -> Result<Vec<InstanceRecord>, ClientError> {
        Ok(self.shared.store.suspected_runaways(limits, limit).await?)
    }

    /// How many live instances wait for event `name`, up to `cap`.
    pub async fn count_waiting_for_event(&self, name: &str, cap: u32) -> Result<u64, ClientError> {
        validate_name("event name", name)?;
        Ok(self.shared.store.count_waiting_for_event(name, cap).await?)
    }

    /// How many live instances are past any of `limits`, up to `cap`.
    pub async fn count_suspected_runaways(
        &self,
        limits: &RunawayLimits,
        cap: u32,
    ) -> Result<u64, ClientError> {
        Ok(self
            .shared
            .store
            .count_suspected_runaways(limits, cap)
            .await?)
    }

    /// Finished instances per time bucket, name and status since `since`; see
    /// [`StoreAdmin::completion_stats`].
    pub async fn completion_stats(
        &self,
        since: TimestampMs,
        bucket_ms: i64,
    ) -> Result<Vec<CompletionBucket>, ClientError> {
        if bucket_ms <= 0 {
            return Err(ClientError::Invalid {
                what: "bucket_ms",
                reason: format!("must be positive, not {bucket_ms}"),
            });
        }
        Ok(self.shared.store.completion_stats(since, bucket_ms).await?)
    }

    async fn deliver(
        &self,
        instance_id: &str,
        message: Message,
        accept: Accept,
    ) -> Result<(), ClientError> {
        validate_name("instance id", instance_id)?;
        op_result(
            self.shared
                .write(WriteOp::Deliver {
                    instance_id: instance_id.to_owned(),
                    message,
                    accept,
                })
                .await,
        )
    }

    /// Raises event `name` with `payload` (JSON text) on a live instance.
    pub async fn raise_event_raw(
        &self,
        instance_id: &str,
        name: &str,
        payload: &str,
    ) -> Result<(), ClientError> {
        validate_name("event name", name)?;
        self.check_payload("event payload", payload)?;
        self.deliver(
            instance_id,
            Message::EventRaised {
                name: name.to_owned(),
                input: payload.to_owned(),
            },
            Accept::Live,
        )
        .await
    }

    /// Raises event `E` on a live instance: `client.raise_event(id, &Approval { … })`.
    pub async fn raise_event<E: crate::Event>(
        &self,
        instance_id: &str,
        event: &E,
    ) -> Result<(), ClientError> {
        let json = to_json("event payload", event)?;
        self.raise_event_raw(instance_id, E::NAME, &json).await
    }

    /// Terminates a live instance; with `recursive`, its running sub-orchestrations too.
    pub async fn terminate(
        &self,
        instance_id: &str,
        reason: &str,
        recursive: bool,
    ) -> Result<(), ClientError> {
        self.deliver(
            instance_id,
            Message::Terminate {
                reason: reason.to_owned(),
                recursive,
            },
            Accept::Live,
        )
        .await
    }

    /// Suspends a running instance: nothing runs, events and results queue.
    pub async fn suspend(&self, instance_id: &str, reason: &str) -> Result<(), ClientError> {
        self.deliver(
            instance_id,
            Message::Suspend {
                reason: reason.to_owned(),
            },
            Accept::Running,
        )
        .await
    }

    /// Resumes a suspended instance.
    pub async fn resume(&self, instance_id: &str, reason: &str) -> Result<(), ClientError> {
        self.deliver(
            instance_id,
            Message::Resume {
                reason: reason.to_owned(),
            },
            Accept::Suspended,
        )
        .await
    }

    /// Re-runs a failed instance from its failed steps: failed activities run again and failed
    /// sub-orchestrations start again. History keeps an `ExecutionRewound` event.
    pub async fn rewind(&self, instance_id: &str, reason: &str) -> Result<(), ClientError> {
        validate_name("instance id", instance_id)?;
        let op = WriteOp::Rewind {
            instance_id: instance_id.to_owned(),
            reason: reason.to_owned(),
            now_ms: self.shared.clock.now_ms(),
        };
        match op_result(self.shared.write(op).await) {
            // Rewind is only for failed instances, finished or not: report the state plainly.
            Err(ClientError::Gone {
                instance_id,
                status,
                action,
            }) => Err(ClientError::WrongState {
                instance_id,
                status,
                action,
            }),
            other => other,
        }
    }

    /// Starts the instance again with its original input: under the same id (replacing its
    /// history; it must be finished) or under `new_id`.
    pub async fn restart(
        &self,
        instance_id: &str,
        new_id: Option<&str>,
    ) -> Result<String, ClientError> {
        let record = self.get(instance_id).await?;
        let input = record.input.ok_or_else(|| ClientError::WrongState {
            instance_id: instance_id.to_owned(),
            status: record.status,
            action: "restart (no recorded input)",
        })?;
        self.start_raw(
            &record.name,
            &input,
            StartOptions {
                instance_id: Some(new_id.unwrap_or(instance_id).to_owned()),
                tags: record.tags,
                scheduled_start_at: None,
            },
        )
        .await
    }

    /// Removes a finished instance and everything that belongs to it; with `recursive`, its
    /// sub-orchestrations too.
    pub async fn purge(&self, instance_id: &str, recursive: bool) -> Result<u64, ClientError> {
        validate_name("instance id", instance_id)?;
        let mut removed = 0;
        let mut stack = vec![instance_id.to_owned()];
        while let Some(id) = stack.pop() {
            if recursive {
                stack.extend(self.shared.store.children(&id).await?);
            }
            match op_result(self.shared.write(WriteOp::Purge { instance_id: id }).await) {
                Ok(()) => removed += 1,
                // A child that is still running or already gone does not stop the purge.
                Err(ClientError::NotFound(_) | ClientError::WrongState { .. }) if removed > 0 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }

    /// Purges finished instances created in `[from, to)` with one of `statuses` (all finished
    /// statuses when empty). Returns how many were removed.
    pub async fn purge_by_filter(
        &self,
        from: TimestampMs,
        to: TimestampMs,
        statuses: &[RuntimeStatus],
    ) -> Result<u64, ClientError> {
        if from > to {
            return Err(ClientError::Invalid {
                what: "created range",
                reason: "the start is after the end".into(),
            });
        }
        let ids = self.shared.store.terminal_ids(from, to, statuses).await?;
        let mut removed = 0;
        for id in ids {
            if self.purge(&id, true).await.is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Waits until the instance is finished (or `timeout` passes) and returns its summary.
    pub async fn wait_for_completion(
        &self,
        instance_id: &str,
        timeout: Duration,
    ) -> Result<InstanceRecord, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let finished = self.shared.watch(instance_id);
            let record = self.get(instance_id).await?;
            if record.status.is_terminal() {
                return Ok(record);
            }
            // Continue-as-new does not finish an instance; wake up now and then to re-check.
            let wait = tokio::time::timeout_at(deadline, finished);
            match tokio::time::timeout(Duration::from_secs(1), wait).await {
                Ok(Err(_)) => return Err(ClientError::Timeout(instance_id.to_owned())),
                _ => continue,
            }
        }
    }
}

fn parse_entity_id(entity_id: &str) -> Result<EntityId, ClientError> {
    EntityId::parse(entity_id).map_err(|reason| ClientError::Invalid {
        what: "entity id",
        reason,
    })
}

fn to_json<T: Serialize + ?Sized>(what: &'static str, value: &T) -> Result<String, ClientError> {
    serde_json::to_string(value).map_err(|e| ClientError::Invalid {
        what,
        reason: e.to_string(),
    })
}

/// A fresh instance id: time-ordered, unique within the process.
pub(crate) fn new_instance_id(now_ms: TimestampMs) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = u64::from(std::process::id());
    format!("{now_ms:013x}-{pid:06x}-{n:08x}")
}
