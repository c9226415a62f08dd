//! System orchestrations: work the engine does for operators, made durable by the engine itself.
//!
//! Every runtime registers them. Their names start with [`SYSTEM_PREFIX`], which marks their
//! instances as system instances: a query with [`InstanceQuery::hide_system`] leaves them out,
//! as the dashboard's instance list does by default.
//!
//! [`Bulk`] applies one verb (terminate, suspend, resume, purge) to every instance a query
//! matches: it pages through the query one chunk at a time ([`BulkChunk`], an activity that
//! applies the verb to one page, concurrently), keeps its progress in its custom status, and
//! continues as new every few chunks so its history stays short however many instances it
//! covers. A crash mid-job resumes where the last committed chunk ended, by the engine's own
//! guarantees; the chunk that was running is applied again, and instances it had already changed
//! are then counted as skipped (the verb no longer applies to them), never changed twice.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Weak},
};

use futures_util::future::join_all;
use serde::{Deserialize, Serialize};

pub use engine_core::bulk::{BulkAction, MAX_BULK};

use crate::{
    client::{Client, ClientError},
    context::OrchestrationContext,
    history::Failure,
    registry::{Activity, ActivityContext, Orchestration, Registry},
    runtime::Shared,
    store::{InstanceQuery, SortBy, Store, StoreAdmin},
};

/// Names of system orchestrations (and their activities) start with this.
pub const SYSTEM_PREFIX: &str = "switchyard.";

/// Instances one chunk covers.
const CHUNK: u32 = 100;

/// Chunks per execution before the job continues as new.
const CHUNKS_PER_EXECUTION: u32 = 20;

/// Errors a job's progress keeps, for the operator to look at.
const KEPT_ERRORS: usize = 5;

/// Whether `name` is a system orchestration's.
pub fn is_system(name: &str) -> bool {
    name.starts_with(SYSTEM_PREFIX)
}

/// A bulk job: the verb, the instances (a query), why, and how many at most.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkJob {
    pub action: BulkAction,
    /// The instances; its page size and cursor are the job's own.
    pub query: InstanceQuery,
    pub reason: String,
    /// Stop after this many matching instances (at most [`MAX_BULK`]).
    pub limit: u64,
    /// How many the dry run found eligible, for the progress display.
    #[serde(default)]
    pub expected: u64,
}

/// A job's progress: the job's custom status while it runs, its output when it ends.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkProgress {
    /// Instances the query matched so far.
    pub matched: u64,
    /// Changed by this job.
    pub done: u64,
    /// The verb did not apply (already in the target state, or changed meanwhile).
    pub skipped: u64,
    /// Refused or failed.
    pub failed: u64,
    /// The first few failures: `<instance id>: <reason>`.
    pub errors: Vec<String>,
    /// How many the dry run found eligible.
    pub expected: u64,
    pub finished: bool,
}

impl BulkProgress {
    fn add(&mut self, chunk: &ChunkDone) {
        self.matched += chunk.matched;
        self.done += chunk.done;
        self.skipped += chunk.skipped;
        self.failed += chunk.errors.len() as u64;
        let room = KEPT_ERRORS.saturating_sub(self.errors.len());
        self.errors.extend(chunk.errors.iter().take(room).cloned());
    }
}

/// What a bulk job carries from one execution to the next.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BulkState {
    pub job: BulkJob,
    #[serde(default)]
    pub progress: BulkProgress,
    /// Where the next chunk starts.
    #[serde(default)]
    pub cursor: Option<String>,
}

impl From<BulkJob> for BulkState {
    fn from(job: BulkJob) -> Self {
        let progress = BulkProgress {
            expected: job.expected,
            ..BulkProgress::default()
        };
        BulkState {
            job,
            progress,
            cursor: None,
        }
    }
}

/// The bulk job orchestration.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bulk;

impl Orchestration for Bulk {
    const NAME: &'static str = "switchyard.Bulk";
    type Input = BulkState;
    type Output = BulkProgress;

    fn validate(state: &BulkState) -> Result<(), String> {
        if state.job.limit > MAX_BULK {
            return Err(format!(
                "a bulk job covers at most {MAX_BULK} instances, not {}",
                state.job.limit
            ));
        }
        if state.job.reason.trim().is_empty() || state.job.reason.len() > 1_000 {
            return Err("a bulk job needs a reason of at most 1,000 bytes".into());
        }
        Ok(())
    }

    async fn run(ctx: OrchestrationContext, mut state: BulkState) -> Result<BulkProgress, Failure> {
        for _ in 0..CHUNKS_PER_EXECUTION {
            let left = state.job.limit.saturating_sub(state.progress.matched);
            let chunk = ChunkTodo {
                action: state.job.action,
                query: InstanceQuery {
                    page_size: CHUNK.min(u32::try_from(left).unwrap_or(CHUNK)).max(1),
                    cursor: state.cursor.clone(),
                    // Paged by creation time, which the verbs do not change: a changed
                    // instance never moves ahead of the cursor to be seen twice.
                    sort: SortBy::Created,
                    ..state.job.query.clone()
                },
                reason: state.job.reason.clone(),
            };
            let done = ctx.call_activity::<BulkChunk>(&chunk).await?;
            state.progress.add(&done);
            state.cursor = done.next_cursor;
            if state.cursor.is_none() || state.progress.matched >= state.job.limit {
                state.progress.finished = true;
                ctx.set_custom_status(&state.progress);
                return Ok(state.progress);
            }
            ctx.set_custom_status(&state.progress);
        }
        ctx.continue_as_new(&state).await
    }
}

/// One chunk of a bulk job: a page of the query and the verb to apply to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChunkTodo {
    pub action: BulkAction,
    pub query: InstanceQuery,
    pub reason: String,
}

/// What one chunk did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChunkDone {
    pub matched: u64,
    pub done: u64,
    pub skipped: u64,
    pub errors: Vec<String>,
    pub next_cursor: Option<String>,
}

/// Applies a bulk verb to one page of instances, concurrently, through the management client
/// of the runtime that runs it.
pub struct BulkChunk {
    apply: ChunkFn,
}

type ChunkFuture = Pin<Box<dyn Future<Output = Result<ChunkDone, Failure>> + Send>>;
type ChunkFn = Arc<dyn Fn(ChunkTodo) -> ChunkFuture + Send + Sync>;

impl Activity for BulkChunk {
    const NAME: &'static str = "switchyard.BulkChunk";
    type Input = ChunkTodo;
    type Output = ChunkDone;

    async fn run(&self, _: ActivityContext, todo: ChunkTodo) -> Result<ChunkDone, Failure> {
        (self.apply)(todo).await
    }
}

async fn apply_chunk<S: Store + StoreAdmin + Clone>(
    shared: Weak<Shared<S>>,
    todo: ChunkTodo,
) -> Result<ChunkDone, Failure> {
    let shared = shared
        .upgrade()
        .ok_or_else(|| Failure::new("Stopped", "the runtime is shutting down"))?;
    let client = Client::from_shared(shared);
    let page = client.query(&todo.query).await?;
    let reason = todo.reason.as_str();
    let action = todo.action;
    let outcomes = join_all(page.instances.iter().map(|record| {
        let client = &client;
        async move {
            if !action.applies_to(record.status) {
                return Ok(false);
            }
            let id = record.instance_id.as_str();
            let applied = match action {
                BulkAction::Terminate => client.terminate(id, reason, true).await,
                BulkAction::Suspend => client.suspend(id, reason).await,
                BulkAction::Resume => client.resume(id, reason).await,
                BulkAction::Purge => client.purge(id, true).await.map(drop),
            };
            match applied {
                Ok(()) => Ok(true),
                // Changed meanwhile (finished, or by someone else): nothing to do.
                Err(ClientError::Gone { .. } | ClientError::NotFound(_)) => Ok(false),
                Err(e) => Err(format!("{id}: {e}")),
            }
        }
    }))
    .await;
    let mut done = ChunkDone {
        matched: page.instances.len() as u64,
        next_cursor: page.next_cursor,
        ..ChunkDone::default()
    };
    for outcome in outcomes {
        match outcome {
            Ok(true) => done.done += 1,
            Ok(false) => done.skipped += 1,
            Err(e) => done.errors.push(e),
        }
    }
    Ok(done)
}

/// Adds the system orchestrations and their activities to a runtime's registry.
pub(crate) fn register<S: Store + StoreAdmin + Clone>(
    registry: &mut Registry,
    shared: Weak<Shared<S>>,
) {
    let apply: ChunkFn = Arc::new(move |todo| Box::pin(apply_chunk(shared.clone(), todo)));
    registry
        .orchestration::<Bulk>()
        .activity(BulkChunk { apply });
}
