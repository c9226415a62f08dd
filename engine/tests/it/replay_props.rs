//! Property test: random orchestration programs, run turn by turn with random batching of
//! messages, replay to exactly the same events and actions.
//!
//! A program is a list of steps (sequential calls, parallel fan-outs, timers, races between a
//! timer and an activity, custom status, UUIDs) interpreted by one orchestration. For every turn
//! the simulator recorded, a fresh executor replaying the history before that turn and given the
//! same messages must produce an identical `TurnResult`; and the cached executor that ran every
//! turn incrementally must agree with the from-scratch one.

use std::time::Duration;

use engine::{
    Executor, Failure, Orchestration, OrchestrationContext, Registry, RuntimeStatus, select,
    when_all, when_any,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use crate::fixtures::{Double, Sim, start};

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Step {
    Call(i64),
    Parallel(Vec<i64>),
    Sleep(u16),
    RaceTimerAgainstCall(u16, i64),
    AnyOf(Vec<i64>),
    Status(i64),
    Uuid,
}

struct Program;
impl Orchestration for Program {
    const NAME: &'static str = "Program";
    type Input = Vec<Step>;
    type Output = Vec<String>;
    async fn run(ctx: OrchestrationContext, steps: Vec<Step>) -> Result<Vec<String>, Failure> {
        let mut trace = Vec::new();
        for step in steps {
            match step {
                Step::Call(n) => trace.push(ctx.call_activity::<Double>(&n).await?.to_string()),
                Step::Parallel(ns) => {
                    let calls: Vec<_> = ns.iter().map(|n| ctx.call_activity::<Double>(n)).collect();
                    for r in when_all(calls).await {
                        trace.push(r?.to_string());
                    }
                }
                Step::Sleep(ms) => {
                    ctx.sleep(Duration::from_millis(u64::from(ms))).await;
                    trace.push(format!("slept@{}", ctx.now_ms()));
                }
                Step::RaceTimerAgainstCall(ms, n) => {
                    let timer = std::pin::pin!(ctx.sleep(Duration::from_millis(u64::from(ms))));
                    let call = std::pin::pin!(ctx.call_activity::<Double>(&n));
                    trace.push(match select(timer, call).await {
                        engine::Either::Left(_) => "timer".into(),
                        engine::Either::Right((r, _)) => format!("call {}", r?),
                    });
                }
                Step::AnyOf(ns) => {
                    let calls: Vec<_> = ns.iter().map(|n| ctx.call_activity::<Double>(n)).collect();
                    let (i, r) = when_any(calls).await;
                    trace.push(format!("any {i} {}", r?));
                }
                Step::Status(n) => ctx.set_custom_status(&n),
                Step::Uuid => trace.push(ctx.new_uuid()),
            }
        }
        Ok(trace)
    }
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (-50i64..50).prop_map(Step::Call),
        prop::collection::vec(-50i64..50, 1..6).prop_map(Step::Parallel),
        (0u16..500).prop_map(Step::Sleep),
        ((0u16..3), (-50i64..50)).prop_map(|(ms, n)| Step::RaceTimerAgainstCall(ms, n)),
        prop::collection::vec(-50i64..50, 1..4).prop_map(Step::AnyOf),
        (0i64..9).prop_map(Step::Status),
        Just(Step::Uuid),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_programs_replay_to_the_same_actions(
        steps in prop::collection::vec(step(), 0..12),
        batch in 1usize..5,
    ) {
        let mut registry = Registry::new();
        registry.orchestration::<Program>().activity(Double);
        let mut sim = Sim::new(registry.clone(), start("Program", &steps));
        sim.batch = batch;
        let status = sim.run();
        prop_assert_eq!(status, RuntimeStatus::Completed);

        // Every turn, replayed from scratch, gives the same result.
        let mut cached = Executor::new(registry.clone(), "sim-1");
        for turn in &sim.turns {
            let mut fresh = Executor::replay(registry.clone(), "sim-1", &turn.history_before);
            let again = fresh.turn(turn.now_ms, &turn.messages);
            prop_assert_eq!(&again, &turn.result);
            let incremental = cached.turn(turn.now_ms, &turn.messages);
            prop_assert_eq!(&incremental, &turn.result);
        }
        // And the whole history replays to the same terminal state.
        let replayed = Executor::replay(registry, "sim-1", &sim.history);
        prop_assert_eq!(replayed.status(), RuntimeStatus::Completed);
    }
}
