//! Typed registration of orchestrations, activities and entities.
//!
//! Users implement [`Orchestration`] and [`Activity`] on a type that names the function
//! (`const NAME`) and its input and output types. Calls are typed at the call site
//! (`ctx.call_activity::<Charge>(&input)`), so names are written once, beside the code they name.
//! The [`Registry`] erases the types to JSON text for the replay core and the workers.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
};

use serde::{Serialize, de::DeserializeOwned};

use crate::{
    context::OrchestrationContext,
    entity::{Entity, EntityBuilder, EntityEntry},
    history::{Failure, Json},
    resilience::{breaker::BreakerConfig, config::LimiterConfig},
};

/// An orchestration: deterministic async code that coordinates activities, timers and events.
///
/// The body must be deterministic: the same history must lead to the same calls. Use the
/// context's clock, UUIDs and logging instead of the system's.
pub trait Orchestration: 'static {
    /// The registered name; stable across deployments.
    const NAME: &'static str;
    /// The code version recorded in history; informational.
    const VERSION: &'static str = "1";
    type Input: Serialize + DeserializeOwned;
    type Output: Serialize + DeserializeOwned;

    fn run(
        ctx: OrchestrationContext,
        input: Self::Input,
    ) -> impl Future<Output = Result<Self::Output, Failure>>;

    /// Refuses inputs the orchestration cannot handle (absurd sizes, out-of-range values) with a
    /// message for the caller. Checked when an instance is started (the start is refused as
    /// invalid) and again before the body runs (sub-orchestrations, continue-as-new), where a
    /// refusal fails the instance with `InvalidInput`.
    fn validate(_input: &Self::Input) -> Result<(), String> {
        Ok(())
    }
}

/// An activity: a unit of side-effecting work, run at least once.
pub trait Activity: Send + Sync + 'static {
    /// The registered name; stable across deployments.
    const NAME: &'static str;
    type Input: Serialize + DeserializeOwned + Send;
    type Output: Serialize + DeserializeOwned + Send;
    /// The resilience primitives every call goes through (none by default):
    /// `#[activity(limiter = "payments", breaker = "payments", concurrency = 4)]`.
    const OPTIONS: ActivityOptions = ActivityOptions::NONE;

    fn run(
        &self,
        ctx: ActivityContext,
        input: Self::Input,
    ) -> impl Future<Output = Result<Self::Output, Failure>> + Send;
}

/// An external event: its payload type, and the name it is raised and waited for under. The
/// name is written once, here, so the orchestration that waits (`ctx.wait_for_event::<E>()`),
/// the client that raises it (`client.raise_event(id, &payload)`) and the dashboard that lists
/// who waits for it (`E::NAME`) cannot disagree.
pub trait Event: Serialize + DeserializeOwned + 'static {
    const NAME: &'static str;
}

/// The resilience primitives an activity's calls go through, by name. Limiters and breakers
/// are registered on the [`Registry`] ([`Registry::limiter`], [`Registry::breaker`]) and may be
/// shared by several activities; the concurrency limit is this activity's own, per process.
///
/// In order: the concurrency limit (wait for a slot), the breaker (fail fast with
/// [`CIRCUIT_OPEN`](crate::resilience::CIRCUIT_OPEN) while open), the limiter (wait for
/// admission up to its `max_wait`, else [`RATE_LIMITED`](crate::resilience::RATE_LIMITED)),
/// then the call, whose outcome and duration the breaker records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ActivityOptions {
    pub limiter: Option<&'static str>,
    pub breaker: Option<&'static str>,
    /// At most this many calls of this activity at once in one process.
    pub concurrency: Option<u32>,
}

impl ActivityOptions {
    pub const NONE: ActivityOptions = ActivityOptions {
        limiter: None,
        breaker: None,
        concurrency: None,
    };

    pub fn is_none(&self) -> bool {
        *self == ActivityOptions::NONE
    }
}

/// What an activity knows about its invocation.
#[derive(Debug, Clone)]
pub struct ActivityContext {
    pub instance_id: String,
    /// The `TaskScheduled` event id in the orchestration's history. Together with the instance id
    /// it identifies the call across redeliveries (activities run at least once), so it makes a
    /// good idempotency key.
    pub scheduled_id: u32,
}

pub(crate) type OrchestrationFuture = Pin<Box<dyn Future<Output = Result<Json, Failure>>>>;
type OrchestrationFn = Arc<dyn Fn(OrchestrationContext, Json) -> OrchestrationFuture + Send + Sync>;
type ValidateFn = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;
pub type ActivityFuture = Pin<Box<dyn Future<Output = Result<Json, Failure>> + Send>>;
type ActivityFn = Arc<dyn Fn(ActivityContext, Json) -> ActivityFuture + Send + Sync>;

/// A registered orchestration, type-erased.
#[derive(Clone)]
pub struct OrchestrationEntry {
    pub version: &'static str,
    start: OrchestrationFn,
    validate: ValidateFn,
}

impl OrchestrationEntry {
    /// Decodes `input` and applies the orchestration's [`Orchestration::validate`].
    pub fn validate(&self, input: &str) -> Result<(), String> {
        (self.validate)(input)
    }

    pub(crate) fn start(&self, ctx: OrchestrationContext, input: Json) -> OrchestrationFuture {
        (self.start)(ctx, input)
    }
}

/// A registered activity, type-erased.
#[derive(Clone)]
struct ActivityEntry {
    run: ActivityFn,
    options: ActivityOptions,
}

/// Orchestrations and activities by name, and the named limiters and breakers activities use.
#[derive(Clone, Default)]
pub struct Registry {
    orchestrations: HashMap<&'static str, OrchestrationEntry>,
    activities: HashMap<&'static str, ActivityEntry>,
    limiters: BTreeMap<String, LimiterConfig>,
    breakers: BTreeMap<String, BreakerConfig>,
    /// By lower-case name (entity names are case-insensitive).
    entities: HashMap<String, EntityEntry>,
    /// JSON Schemas of orchestrations' inputs, where described (see [`Registry::describe_input`]).
    input_schemas: HashMap<&'static str, serde_json::Value>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut o: Vec<_> = self.orchestrations.keys().collect();
        let mut a: Vec<_> = self.activities.keys().collect();
        let mut e: Vec<_> = self.entities.keys().collect();
        o.sort();
        a.sort();
        e.sort();
        f.debug_struct("Registry")
            .field("orchestrations", &o)
            .field("activities", &a)
            .field("entities", &e)
            .finish()
    }
}

/// Decodes a JSON payload into `T`, as a failure of type `InvalidPayload` naming what it was for.
pub(crate) fn decode<T: DeserializeOwned>(json: &str, what: &str) -> Result<T, Failure> {
    serde_json::from_str(json)
        .map_err(|e| Failure::new("InvalidPayload", format!("cannot decode {what}: {e}")))
}

/// Encodes `value` as JSON text.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<Json, Failure> {
    serde_json::to_string(value)
        .map_err(|e| Failure::new("InvalidPayload", format!("cannot encode {what}: {e}")))
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Registers orchestration `O`. A second registration of the same name replaces the first.
    pub fn orchestration<O: Orchestration>(&mut self) -> &mut Self {
        let start: OrchestrationFn = Arc::new(|ctx, input| {
            Box::pin(async move {
                let input: O::Input = decode(&input, &format!("the input of {}", O::NAME))?;
                O::validate(&input).map_err(|reason| Failure::new("InvalidInput", reason))?;
                let output = O::run(ctx, input).await?;
                encode(&output, &format!("the output of {}", O::NAME))
            })
        });
        let validate: ValidateFn = Arc::new(|input| {
            let input: O::Input = decode(input, &format!("the input of {}", O::NAME))
                .map_err(|failure| failure.message)?;
            O::validate(&input)
        });
        self.orchestrations.insert(
            O::NAME,
            OrchestrationEntry {
                version: O::VERSION,
                start,
                validate,
            },
        );
        self
    }

    /// Registers activity `A`, implemented by `activity`.
    pub fn activity<A: Activity>(&mut self, activity: A) -> &mut Self {
        let activity = Arc::new(activity);
        let run: ActivityFn = Arc::new(move |ctx, input| {
            let activity = activity.clone();
            Box::pin(async move {
                let input: A::Input = decode(&input, &format!("the input of {}", A::NAME))?;
                let output = activity.run(ctx, input).await?;
                encode(&output, &format!("the output of {}", A::NAME))
            })
        });
        self.activities.insert(
            A::NAME,
            ActivityEntry {
                run,
                options: A::OPTIONS,
            },
        );
        self
    }

    /// Registers the limiter `name` (a second registration replaces the first).
    pub fn limiter(&mut self, name: &str, config: LimiterConfig) -> &mut Self {
        self.limiters.insert(name.to_owned(), config);
        self
    }

    /// Registers the circuit breaker `name` (a second registration replaces the first).
    pub fn breaker(&mut self, name: &str, config: BreakerConfig) -> &mut Self {
        self.breakers.insert(name.to_owned(), config);
        self
    }

    /// The registered limiters, by name.
    pub fn limiters(&self) -> &BTreeMap<String, LimiterConfig> {
        &self.limiters
    }

    /// The registered breakers, by name.
    pub fn breakers(&self) -> &BTreeMap<String, BreakerConfig> {
        &self.breakers
    }

    /// The options of the activity registered as `name`.
    pub fn activity_options(&self, name: &str) -> Option<ActivityOptions> {
        self.activities.get(name).map(|a| a.options)
    }

    /// Activities with options, sorted by name.
    pub fn guarded_activities(&self) -> Vec<(&'static str, ActivityOptions)> {
        let mut guarded: Vec<_> = self
            .activities
            .iter()
            .filter(|(_, a)| !a.options.is_none())
            .map(|(name, a)| (*name, a.options))
            .collect();
        guarded.sort_unstable_by_key(|(name, _)| *name);
        guarded
    }

    /// Checks that every limiter and breaker an activity names is registered, and that every
    /// limiter's figures are valid; the runtime refuses to start otherwise.
    pub fn check_resilience(&self) -> Result<(), String> {
        for (name, config) in &self.limiters {
            config
                .validate()
                .map_err(|e| format!("limiter {name:?}: {e}"))?;
        }
        for (activity, options) in self.guarded_activities() {
            if let Some(limiter) = options.limiter
                && !self.limiters.contains_key(limiter)
            {
                return Err(format!(
                    "activity {activity} names limiter {limiter:?}, which is not registered"
                ));
            }
            if let Some(breaker) = options.breaker
                && !self.breakers.contains_key(breaker)
            {
                return Err(format!(
                    "activity {activity} names breaker {breaker:?}, which is not registered"
                ));
            }
            if options.concurrency == Some(0) {
                return Err(format!("activity {activity} has a concurrency limit of 0"));
            }
        }
        Ok(())
    }

    /// Registers an entity type with its operations:
    /// `registry.entity(EntityBuilder::<Counter>::default().operation::<Add>())`.
    pub fn entity<E: Entity>(&mut self, builder: EntityBuilder<E>) -> &mut Self {
        self.entities
            .insert(E::NAME.to_ascii_lowercase(), builder.build());
        self
    }

    /// The entity type registered under `name` (any case).
    pub fn get_entity(&self, name: &str) -> Option<&EntityEntry> {
        self.entities.get(&name.to_ascii_lowercase())
    }

    /// The registered entity names, in lower case, sorted.
    pub fn entity_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.entities.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub fn get_orchestration(&self, name: &str) -> Option<&OrchestrationEntry> {
        self.orchestrations.get(name)
    }

    /// Runs the named activity, or fails with `UnknownActivity`.
    pub fn run_activity(&self, name: &str, ctx: ActivityContext, input: Json) -> ActivityFuture {
        match self.activities.get(name) {
            Some(entry) => (entry.run)(ctx, input),
            None => {
                let failure = Failure::new(
                    "UnknownActivity",
                    format!("no activity named {name:?} is registered"),
                );
                Box::pin(async move { Err(failure) })
            }
        }
    }

    /// Registered orchestration names, sorted.
    /// Records the JSON Schema of orchestration `O`'s input, so tools (the dashboard's Start
    /// page) can offer an example and check an input before it is sent. The engine derives it
    /// from the Rust type (`engine::schema::describe`); the start itself still decodes the input
    /// into the type and validates it.
    pub fn describe_input<O: Orchestration>(&mut self, schema: serde_json::Value) -> &mut Self {
        self.input_schemas.insert(O::NAME, schema);
        self
    }

    /// The JSON Schema of orchestration `name`'s input, when it was described.
    pub fn input_schema(&self, name: &str) -> Option<&serde_json::Value> {
        self.input_schemas.get(name)
    }

    pub fn orchestration_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.orchestrations.keys().copied().collect();
        names.sort_unstable();
        names
    }
}
