//! Replay core tests built from history fixtures: what a turn records and schedules, what replay
//! reproduces, and how nondeterminism, races, suspension, termination, sub-orchestrations and
//! continue-as-new behave.

use engine::{
    Action, EventKind, Executor, Failure, Message, RuntimeStatus, execute_turn,
    history::ParentInstance,
};

use crate::fixtures::*;

#[test]
fn first_turn_records_start_and_schedules_the_first_activity() {
    let r = registry();
    let result = execute_turn(&r, "i1", &[], &[start("HelloChain", &vec!["a", "b"])], 5);
    let kinds: Vec<_> = result.new_events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        kinds,
        [
            "OrchestratorStarted",
            "ExecutionStarted",
            "TaskScheduled",
            "OrchestratorCompleted"
        ]
    );
    assert_eq!(
        result.actions,
        vec![Action::ScheduleActivity {
            scheduled_id: 2,
            name: "Hello".into(),
            input: "\"a\"".into()
        }]
    );
    assert_eq!(result.status, RuntimeStatus::Running);
    assert_eq!(result.consumed, vec![0]);
    assert!(result.new_events.iter().all(|e| e.timestamp_ms == 5));
}

#[test]
fn hello_chain_completes_with_exact_history() {
    let mut sim = Sim::new(
        registry(),
        start("HelloChain", &vec!["a", "b", "c", "d", "e"]),
    );
    assert_eq!(sim.run(), RuntimeStatus::Completed);
    // 4 events for the start turn, 4 per activity result.
    assert_eq!(sim.history.len(), 24, "{:?}", sim.kinds());
    let last = sim.turns.last().unwrap();
    assert_eq!(
        last.result.output.as_deref(),
        Some(r#"["Hello, a!","Hello, b!","Hello, c!","Hello, d!","Hello, e!"]"#)
    );
    // Replaying the full history from scratch reproduces the terminal state and schedules nothing.
    let replayed = Executor::replay(registry(), "sim-1", &sim.history);
    assert_eq!(replayed.status(), RuntimeStatus::Completed);
}

#[test]
fn changed_code_fails_with_a_nondeterminism_error_naming_both_sides() {
    let mut sim = Sim::new(registry(), start("HelloChain", &vec!["a", "b"]));
    sim.step(); // start: schedules Hello
    sim.step(); // Hello completes: schedules the second Hello
    let mut changed = engine::Registry::new();
    changed
        .orchestration::<HelloChainChanged>()
        .activity(Double);
    let result = execute_turn(
        &changed,
        "sim-1",
        &sim.history,
        &[Message::TaskCompleted {
            scheduled_id: 6,
            result: "\"Hello, b!\"".into(),
        }],
        2_000_000,
    );
    assert_eq!(result.status, RuntimeStatus::Failed);
    let failure = result.failure.unwrap();
    assert_eq!(failure.error_type, "NonDeterminism");
    assert!(
        failure.message.contains(r#"activity "Hello""#)
            && failure.message.contains(r#"activity "Double""#),
        "{failure}"
    );
    assert!(
        result
            .new_events
            .iter()
            .any(|e| e.kind.name() == "ExecutionFailed")
    );
    assert!(
        result.actions.is_empty(),
        "a failed replay schedules nothing"
    );
}

#[test]
fn dropping_a_recorded_call_is_nondeterminism_too() {
    let history = vec![
        ev(0, EventKind::OrchestratorStarted),
        ev(
            1,
            EventKind::ExecutionStarted {
                name: "FanOut".into(),
                version: "1".into(),
                input: "1".into(),
                tags: Default::default(),
                parent: None,
                generation: 0,
            },
        ),
        ev(
            2,
            EventKind::TaskScheduled {
                name: "Double".into(),
                input: "0".into(),
            },
        ),
        ev(
            3,
            EventKind::TaskScheduled {
                name: "Double".into(),
                input: "1".into(),
            },
        ),
        ev(4, EventKind::OrchestratorCompleted),
    ];
    // FanOut(1) schedules one Double; history says two were scheduled.
    let result = execute_turn(&registry(), "i", &history, &[], 9);
    assert_eq!(result.status, RuntimeStatus::Failed);
    let failure = result.failure.unwrap();
    assert!(failure.message.contains("history event 3"), "{failure}");
}

#[test]
fn approval_arriving_first_wins_and_timeout_escalates() {
    let r = registry();
    let mut sim = Sim::new(r.clone(), start("Approval", &60u64));
    let first = sim.step().clone();
    assert_eq!(first.waiting.len(), 1);
    assert_eq!(first.waiting[0].name, "Approval");
    assert_eq!(first.waiting[0].deadline_ms, Some(1_000_000 + 60_000));
    sim.inbox.push(Message::EventRaised {
        name: "Approval".into(),
        input: r#"{"approved":true}"#.into(),
    });
    let done = sim.step().clone();
    assert_eq!(done.status, RuntimeStatus::Completed);
    assert_eq!(done.output.as_deref(), Some("\"approved\""));

    let mut late = Sim::new(r, start("Approval", &60u64));
    assert_eq!(late.run(), RuntimeStatus::Completed); // only the timer can fire
    assert_eq!(
        late.turns.last().unwrap().result.output.as_deref(),
        Some("\"escalated\"")
    );
}

#[test]
fn a_race_replays_in_history_order_even_when_both_results_are_present() {
    // The timer fired first and the approval came later in the same turn: history order decides.
    let r = registry();
    let mut sim = Sim::new(r.clone(), start("Approval", &60u64));
    sim.step();
    sim.inbox.push(Message::TimerFired { timer_id: 2 });
    sim.inbox.push(Message::EventRaised {
        name: "Approval".into(),
        input: r#"{"approved":true}"#.into(),
    });
    let result = sim.step().clone();
    assert_eq!(result.output.as_deref(), Some("\"escalated\""));
    let replayed = Executor::replay(r, "sim-1", &sim.history);
    assert_eq!(replayed.status(), RuntimeStatus::Completed);
}

#[test]
fn an_event_raised_before_the_wait_is_buffered_and_delivered() {
    let mut sim = Sim::new(registry(), start("Approval", &60u64));
    sim.inbox.push(Message::EventRaised {
        name: "Approval".into(),
        input: r#"{"approved":false}"#.into(),
    });
    let result = sim.step().clone();
    assert_eq!(result.output.as_deref(), Some("\"rejected\""));
}

#[test]
fn while_suspended_messages_stay_queued_until_resume() {
    let mut sim = Sim::new(registry(), start("HelloChain", &vec!["a"]));
    sim.step();
    sim.inbox.insert(
        0,
        Message::Suspend {
            reason: "maintenance".into(),
        },
    );
    let suspended = sim.step().clone();
    assert_eq!(suspended.status, RuntimeStatus::Suspended);
    assert_eq!(
        suspended.consumed,
        vec![0],
        "the activity result stays queued"
    );
    assert_eq!(sim.inbox.len(), 1);
    // A turn with nothing consumable writes nothing.
    let idle = sim.step().clone();
    assert!(idle.new_events.is_empty() && idle.consumed.is_empty());
    sim.inbox.push(Message::Resume {
        reason: "done".into(),
    });
    assert_eq!(sim.run(), RuntimeStatus::Completed);
}

#[test]
fn an_event_queued_ahead_of_a_resume_is_delivered_in_the_same_turn() {
    let mut sim = Sim::new(registry(), start("Approval", &60u64));
    sim.step();
    sim.inbox.push(Message::Suspend {
        reason: "hold".into(),
    });
    assert_eq!(sim.step().status, RuntimeStatus::Suspended);
    sim.inbox.push(Message::EventRaised {
        name: "Approval".into(),
        input: r#"{"approved":true}"#.into(),
    });
    sim.inbox.push(Message::Resume {
        reason: "go".into(),
    });
    let result = sim.step().clone();
    assert_eq!(result.consumed, vec![0, 1]);
    assert_eq!(result.status, RuntimeStatus::Completed);
    assert_eq!(result.output.as_deref(), Some("\"approved\""));
}

#[test]
fn recursive_terminate_reaches_children_and_parents_hear_of_it() {
    let mut sim = Sim::new(registry(), start("Parent", &vec!["x"]));
    let first = sim.step().clone();
    let [
        Action::StartSubOrchestration {
            instance_id, start, ..
        },
    ] = first.actions.as_slice()
    else {
        panic!("expected one child start: {:?}", first.actions)
    };
    assert_eq!(instance_id, "sim-1:2");
    let Message::Start {
        parent: Some(ParentInstance { scheduled_id, .. }),
        ..
    } = start
    else {
        panic!("child start names its parent")
    };
    assert_eq!(*scheduled_id, 2);
    sim.inbox.push(Message::Terminate {
        reason: "runaway".into(),
        recursive: true,
    });
    let result = sim.step().clone();
    assert_eq!(result.status, RuntimeStatus::Terminated);
    assert_eq!(
        result.actions,
        vec![Action::SendMessage {
            instance_id: "sim-1:2".into(),
            message: Message::Terminate {
                reason: "runaway".into(),
                recursive: true
            }
        }]
    );

    // A child that is terminated tells its parent.
    let child = execute_turn(
        &registry(),
        "sim-1:2",
        &[],
        &[
            start.clone(),
            Message::Terminate {
                reason: "runaway".into(),
                recursive: true,
            },
        ],
        7,
    );
    assert_eq!(child.status, RuntimeStatus::Terminated);
    assert!(matches!(
        child.actions.last(),
        Some(Action::SendMessage { instance_id, message: Message::SubOrchestrationFailed { scheduled_id: 2, .. } })
            if instance_id == "sim-1"
    ));
}

#[test]
fn sub_orchestration_result_reaches_the_parent() {
    let mut sim = Sim::new(registry(), start("Parent", &vec!["x"]));
    sim.step();
    sim.inbox.push(Message::SubOrchestrationCompleted {
        scheduled_id: 2,
        result: r#"["Hello, x!"]"#.into(),
    });
    let result = sim.step().clone();
    assert_eq!(result.status, RuntimeStatus::Completed);
    assert_eq!(result.output.as_deref(), Some(r#"["Hello, x!"]"#));
}

#[test]
fn continue_as_new_restarts_with_the_next_generation_and_carries_events_over() {
    let mut sim = Sim::new(registry(), start("Counter", &2u32));
    sim.step();
    sim.inbox.push(Message::EventRaised {
        name: "Unrelated".into(),
        input: "1".into(),
    });
    sim.inbox.push(Message::TimerFired { timer_id: 2 });
    let result = sim.step().clone();
    assert_eq!(result.status, RuntimeStatus::ContinuedAsNew);
    let [Action::ContinueAsNew { start, carry_over }] = result.actions.as_slice() else {
        panic!("{:?}", result.actions)
    };
    assert!(matches!(start, Message::Start { generation: 1, input, .. } if input == "1"));
    assert_eq!(carry_over.len(), 1, "the buffered event carries over");
}

#[test]
fn duplicate_completions_are_consumed_and_ignored() {
    let mut sim = Sim::new(registry(), start("HelloChain", &vec!["a", "b"]));
    sim.step();
    let dup = Message::TaskCompleted {
        scheduled_id: 2,
        result: "\"Hello, a!\"".into(),
    };
    sim.inbox.push(dup.clone());
    sim.inbox.push(dup);
    let result = sim.step().clone();
    assert_eq!(result.consumed, vec![0, 1, 2]);
    let completions = result
        .new_events
        .iter()
        .filter(|e| e.kind.name() == "TaskCompleted")
        .count();
    assert_eq!(completions, 1);
}

#[test]
fn fan_out_of_a_thousand_completes_in_one_round() {
    let mut sim = Sim::new(registry(), start("FanOut", &1000i64));
    let first = sim.step().clone();
    assert_eq!(first.actions.len(), 1000);
    assert_eq!(sim.run(), RuntimeStatus::Completed);
    let sum: i64 = (0..1000).map(|i| i * 2).sum();
    assert_eq!(
        sim.turns.last().unwrap().result.output.as_deref(),
        Some(sum.to_string().as_str())
    );
}

#[test]
fn unknown_orchestration_and_bad_input_fail_clearly() {
    let r = registry();
    let unknown = execute_turn(&r, "i", &[], &[start("Nope", &1)], 1);
    assert_eq!(unknown.status, RuntimeStatus::Failed);
    assert_eq!(unknown.failure.unwrap().error_type, "UnknownOrchestration");
    let bad = execute_turn(&r, "i", &[], &[start("HelloChain", &42)], 1);
    let failure: Failure = bad.failure.unwrap();
    assert_eq!(failure.error_type, "InvalidPayload");
    assert!(failure.message.contains("HelloChain"), "{failure}");
}

#[test]
fn terminating_a_pending_instance_records_it() {
    let result = execute_turn(
        &registry(),
        "i",
        &[],
        &[Message::Terminate {
            reason: "never mind".into(),
            recursive: false,
        }],
        1,
    );
    assert_eq!(result.status, RuntimeStatus::Terminated);
}

#[test]
fn rewind_plan_reopens_failed_tasks_and_replay_skips_their_failures() {
    let mut sim = Sim::new(registry(), start("HelloChain", &vec!["a", "b"]));
    sim.step();
    sim.inbox.clear();
    sim.inbox.push(Message::TaskFailed {
        scheduled_id: 2,
        failure: Failure::new("Io", "down"),
    });
    assert_eq!(sim.step().status, RuntimeStatus::Failed);

    let plan = engine::rewind::plan_rewind(&sim.history);
    assert_eq!(plan.rewound, vec![2]);
    assert_eq!(
        plan.activities,
        vec![(2, "Hello".to_owned(), "\"a\"".to_owned())]
    );
    let mut history = sim.history.clone();
    history.push(ev(
        history.len() as u32,
        EventKind::ExecutionRewound {
            reason: "retry".into(),
            rewound: plan.rewound,
        },
    ));
    let rewound = Executor::replay(registry(), "sim-1", &history);
    assert_eq!(rewound.status(), RuntimeStatus::Running);
    // A second plan finds nothing left to redo.
    assert!(engine::rewind::plan_rewind(&history).rewound.is_empty());
    let result = execute_turn(
        &registry(),
        "sim-1",
        &history,
        &[Message::TaskCompleted {
            scheduled_id: 2,
            result: "\"Hello, a!\"".into(),
        }],
        3_000_000,
    );
    assert_eq!(result.status, RuntimeStatus::Running);
    assert!(matches!(
        result.actions.as_slice(),
        [Action::ScheduleActivity { name, .. }] if name == "Hello"
    ));
}
