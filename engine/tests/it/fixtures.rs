//! Test orchestrations, a history builder and a simulated runtime for the pure replay core.
//!
//! The simulator plays the runtime's part without I/O: it applies each turn's actions (activities
//! answered by a closure, timers fired in due order, events raised by the test) and feeds the
//! resulting messages into the next turn, recording every turn so tests can replay them.

use std::time::Duration;

use engine::{
    Action, Activity, ActivityContext, EventKind, Executor, Failure, HistoryEvent, Message,
    Orchestration, OrchestrationContext, Registry, RuntimeStatus, TurnResult, select, when_all,
};
use serde::{Deserialize, Serialize};

pub struct Hello;
impl Activity for Hello {
    const NAME: &'static str = "Hello";
    type Input = String;
    type Output = String;
    async fn run(&self, _: ActivityContext, name: String) -> Result<String, Failure> {
        Ok(format!("Hello, {name}!"))
    }
}

pub struct Double;
impl Activity for Double {
    const NAME: &'static str = "Double";
    type Input = i64;
    type Output = i64;
    async fn run(&self, _: ActivityContext, n: i64) -> Result<i64, Failure> {
        Ok(n * 2)
    }
}

/// Calls `Hello` once per name, in sequence.
pub struct HelloChain;
impl Orchestration for HelloChain {
    const NAME: &'static str = "HelloChain";
    type Input = Vec<String>;
    type Output = Vec<String>;
    async fn run(ctx: OrchestrationContext, names: Vec<String>) -> Result<Vec<String>, Failure> {
        let mut out = Vec::new();
        for name in names {
            out.push(ctx.call_activity::<Hello>(&name).await?);
        }
        Ok(out)
    }
}

/// Same shape as HelloChain but calls `Double`: the "changed code" for nondeterminism tests.
pub struct HelloChainChanged;
impl Orchestration for HelloChainChanged {
    const NAME: &'static str = "HelloChain";
    type Input = Vec<String>;
    type Output = Vec<String>;
    async fn run(ctx: OrchestrationContext, names: Vec<String>) -> Result<Vec<String>, Failure> {
        let mut out = Vec::new();
        for (i, _) in names.iter().enumerate() {
            out.push(ctx.call_activity::<Double>(&(i as i64)).await?.to_string());
        }
        Ok(out)
    }
}

/// Waits for an "Approval" event or a timeout, whichever comes first.
pub struct Approval;
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Decision {
    pub approved: bool,
}
impl engine::Event for Decision {
    const NAME: &'static str = "Approval";
}
impl Orchestration for Approval {
    const NAME: &'static str = "Approval";
    type Input = u64;
    type Output = String;
    async fn run(ctx: OrchestrationContext, timeout_secs: u64) -> Result<String, Failure> {
        let event = std::pin::pin!(ctx.wait_for_event::<Decision>());
        let timer = std::pin::pin!(ctx.sleep(Duration::from_secs(timeout_secs)));
        Ok(match select(event, timer).await {
            engine::Either::Left((decision, _)) => {
                if decision?.approved {
                    "approved".into()
                } else {
                    "rejected".into()
                }
            }
            engine::Either::Right(_) => "escalated".into(),
        })
    }
}

/// Fans out `n` Double calls and sums them.
pub struct FanOut;
impl Orchestration for FanOut {
    const NAME: &'static str = "FanOut";
    type Input = i64;
    type Output = i64;
    async fn run(ctx: OrchestrationContext, n: i64) -> Result<i64, Failure> {
        let calls: Vec<_> = (0..n).map(|i| ctx.call_activity::<Double>(&i)).collect();
        let mut sum = 0;
        for r in when_all(calls).await {
            sum += r?;
        }
        Ok(sum)
    }
}

/// Counts to the input with continue-as-new, keeping the highest event value seen.
pub struct Counter;
impl Orchestration for Counter {
    const NAME: &'static str = "Counter";
    type Input = u32;
    type Output = u32;
    async fn run(ctx: OrchestrationContext, n: u32) -> Result<u32, Failure> {
        if n == 0 {
            return Ok(ctx.generation());
        }
        ctx.sleep(Duration::from_secs(1)).await;
        ctx.continue_as_new(&(n - 1)).await
    }
}

/// Calls HelloChain as a child and returns its output.
pub struct Parent;
impl Orchestration for Parent {
    const NAME: &'static str = "Parent";
    type Input = Vec<String>;
    type Output = Vec<String>;
    async fn run(ctx: OrchestrationContext, names: Vec<String>) -> Result<Vec<String>, Failure> {
        ctx.call_sub_orchestration::<HelloChain>(&names, None).await
    }
}

pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.orchestration::<HelloChain>()
        .orchestration::<Approval>()
        .orchestration::<FanOut>()
        .orchestration::<Counter>()
        .orchestration::<Parent>()
        .activity(Hello)
        .activity(Double);
    r
}

pub fn start<T: Serialize>(name: &str, input: &T) -> Message {
    Message::Start {
        name: name.into(),
        version: "1".into(),
        input: serde_json::to_string(input).unwrap(),
        tags: Default::default(),
        parent: None,
        generation: 0,
    }
}

/// Answers an activity call the way the registered test activities would.
pub fn answer(name: &str, input: &str) -> Result<String, Failure> {
    match name {
        "Hello" => {
            let who: String = serde_json::from_str(input).unwrap();
            Ok(serde_json::to_string(&format!("Hello, {who}!")).unwrap())
        }
        "Double" => {
            let n: i64 = serde_json::from_str(input).unwrap();
            Ok((n * 2).to_string())
        }
        other => Err(Failure::new("Unknown", other)),
    }
}

/// One turn as the simulator ran it: the history before, the messages, and the result.
#[derive(Debug, Clone)]
pub struct RecordedTurn {
    pub history_before: Vec<HistoryEvent>,
    pub now_ms: i64,
    pub messages: Vec<Message>,
    pub result: TurnResult,
}

/// Drives one instance to a terminal status (or until no work is left).
pub struct Sim {
    pub registry: Registry,
    pub history: Vec<HistoryEvent>,
    pub inbox: Vec<Message>,
    pub timers: Vec<(i64, u32)>,
    pub now_ms: i64,
    pub turns: Vec<RecordedTurn>,
    pub outbox: Vec<Action>,
    /// How many messages at most go into one turn (models batching).
    pub batch: usize,
}

impl Sim {
    pub fn new(registry: Registry, first: Message) -> Sim {
        Sim {
            registry,
            history: Vec::new(),
            inbox: vec![first],
            timers: Vec::new(),
            now_ms: 1_000_000,
            turns: Vec::new(),
            outbox: Vec::new(),
            batch: usize::MAX,
        }
    }

    /// Replays the stored history from scratch (no cache) and runs one turn.
    pub fn step(&mut self) -> &TurnResult {
        let take = self.inbox.len().min(self.batch);
        let messages: Vec<Message> = self.inbox.drain(..take).collect();
        let mut executor = Executor::replay(self.registry.clone(), "sim-1", &self.history);
        let result = executor.turn(self.now_ms, &messages);
        let mut unconsumed: Vec<Message> = messages
            .iter()
            .enumerate()
            .filter(|(i, _)| !result.consumed.contains(i))
            .map(|(_, m)| m.clone())
            .collect();
        unconsumed.append(&mut self.inbox);
        self.inbox = unconsumed;
        self.turns.push(RecordedTurn {
            history_before: self.history.clone(),
            now_ms: self.now_ms,
            messages,
            result: result.clone(),
        });
        self.history.extend(result.new_events.iter().cloned());
        for action in &result.actions {
            match action {
                Action::ScheduleActivity {
                    scheduled_id,
                    name,
                    input,
                } => self.inbox.push(match answer(name, input) {
                    Ok(result) => Message::TaskCompleted {
                        scheduled_id: *scheduled_id,
                        result,
                    },
                    Err(failure) => Message::TaskFailed {
                        scheduled_id: *scheduled_id,
                        failure,
                    },
                }),
                Action::CreateTimer {
                    timer_id,
                    fire_at_ms,
                } => self.timers.push((*fire_at_ms, *timer_id)),
                other => self.outbox.push(other.clone()),
            }
        }
        &self.turns.last().unwrap().result
    }

    /// Runs turns until the instance is terminal or nothing is left to deliver; fires timers
    /// (advancing the clock) only when no other message is waiting.
    pub fn run(&mut self) -> RuntimeStatus {
        for _ in 0..100_000 {
            if self.inbox.is_empty() {
                self.timers.sort();
                if self.timers.is_empty() {
                    break;
                }
                let (at, timer_id) = self.timers.remove(0);
                self.now_ms = self.now_ms.max(at);
                self.inbox.push(Message::TimerFired { timer_id });
            }
            let status = self.step().status;
            if status.is_terminal() || status == RuntimeStatus::ContinuedAsNew {
                return status;
            }
            self.now_ms += 1;
        }
        self.turns
            .last()
            .map(|t| t.result.status)
            .unwrap_or(RuntimeStatus::Pending)
    }

    pub fn kinds(&self) -> Vec<&'static str> {
        self.history.iter().map(|e| e.kind.name()).collect()
    }
}

/// A hand-written history event, for fixtures.
pub fn ev(id: u32, kind: EventKind) -> HistoryEvent {
    HistoryEvent {
        id,
        timestamp_ms: 1_000_000,
        kind,
    }
}
