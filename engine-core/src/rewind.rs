//! Rewind: which failed steps of a failed execution run again.
//!
//! Pure planning over a history; the engine store's commit rules turn the
//! plan into rows: an `ExecutionRewound` event, the activities to schedule again and the children
//! to start again.

use std::collections::HashSet;

use crate::history::{EventKind, HistoryEvent, Json};

/// Positions of events undone by a later `ExecutionRewound`: the failures it lists and the
/// `ExecutionFailed` before it.
pub(crate) fn superseded_by_rewinds(history: &[HistoryEvent]) -> HashSet<usize> {
    let mut superseded = HashSet::new();
    for (q, event) in history.iter().enumerate() {
        let EventKind::ExecutionRewound { rewound, .. } = &event.kind else {
            continue;
        };
        for (p, earlier) in history[..q].iter().enumerate() {
            match &earlier.kind {
                EventKind::ExecutionFailed { .. } => {
                    superseded.insert(p);
                }
                EventKind::TaskFailed { scheduled_id, .. }
                | EventKind::SubOrchestrationInstanceFailed { scheduled_id, .. }
                    if rewound.contains(scheduled_id) =>
                {
                    superseded.insert(p);
                }
                _ => {}
            }
        }
    }
    superseded
}

/// What rewinding a failed execution redoes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RewindPlan {
    /// Scheduled ids whose failures are undone (recorded in `ExecutionRewound`).
    pub rewound: Vec<u32>,
    /// Activities to run again: (scheduled id, name, input).
    pub activities: Vec<(u32, String, Json)>,
    /// Sub-orchestrations to start again: (scheduled id, child instance id, name, input).
    pub children: Vec<(u32, String, String, Json)>,
}

/// Plans the rewind of a failed execution: every activity or sub-orchestration failure that no
/// earlier rewind has undone is re-run from its recorded scheduling event.
pub fn plan_rewind(history: &[HistoryEvent]) -> RewindPlan {
    let superseded = superseded_by_rewinds(history);
    let mut plan = RewindPlan::default();
    for (position, event) in history.iter().enumerate() {
        if superseded.contains(&position) {
            continue;
        }
        let id = match &event.kind {
            EventKind::TaskFailed { scheduled_id, .. }
            | EventKind::SubOrchestrationInstanceFailed { scheduled_id, .. } => *scheduled_id,
            _ => continue,
        };
        match history.get(id as usize).map(|e| &e.kind) {
            Some(EventKind::TaskScheduled { name, input }) => {
                plan.activities.push((id, name.clone(), input.clone()));
            }
            Some(EventKind::SubOrchestrationInstanceCreated {
                name,
                instance_id,
                input,
            }) => plan
                .children
                .push((id, instance_id.clone(), name.clone(), input.clone())),
            _ => continue,
        }
        plan.rewound.push(id);
    }
    plan
}
