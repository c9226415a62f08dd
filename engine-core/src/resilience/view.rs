//! What a process tells about its resilience primitives: the snapshot it publishes to the store
//! about once a second, the dashboard's Resilience page and the JSON API show, and the operator
//! verbs on a breaker. Shared by the engine, the server and the browser bundle, so a state or an
//! action is spelled once.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::breaker::BreakerState;

/// Seconds of per-second history a limiter keeps for its chart.
pub const HISTORY_SECONDS: usize = 60;

/// A breaker's state, as shown and sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerStatus {
    Closed,
    Open,
    HalfOpen,
    ForcedOpen,
    ForcedClosed,
}

impl BreakerStatus {
    pub fn label(self) -> &'static str {
        match self {
            BreakerStatus::Closed => "closed",
            BreakerStatus::Open => "open",
            BreakerStatus::HalfOpen => "half-open",
            BreakerStatus::ForcedOpen => "forced open",
            BreakerStatus::ForcedClosed => "forced closed",
        }
    }

    /// Whether calls are refused in this state (half-open admits its probes only).
    pub fn rejects(self) -> bool {
        matches!(self, BreakerStatus::Open | BreakerStatus::ForcedOpen)
    }
}

impl From<BreakerState> for BreakerStatus {
    fn from(state: BreakerState) -> Self {
        match state {
            BreakerState::Closed => BreakerStatus::Closed,
            BreakerState::Open { .. } => BreakerStatus::Open,
            BreakerState::HalfOpen => BreakerStatus::HalfOpen,
            BreakerState::ForcedOpen => BreakerStatus::ForcedOpen,
            BreakerState::ForcedClosed => BreakerStatus::ForcedClosed,
        }
    }
}

/// An operator's verb on a breaker (Polly's manual isolate and close, resilience4j's reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerAction {
    /// Reject every call until reset.
    ForceOpen,
    /// Admit every call, never trip, until reset.
    ForceClose,
    /// Back to an empty closed breaker.
    Reset,
}

impl BreakerAction {
    pub const ALL: [BreakerAction; 3] = [
        BreakerAction::ForceOpen,
        BreakerAction::ForceClose,
        BreakerAction::Reset,
    ];

    /// The wire and audit name.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerAction::ForceOpen => "force-open",
            BreakerAction::ForceClose => "force-close",
            BreakerAction::Reset => "reset",
        }
    }

    /// The button's words.
    pub fn label(self) -> &'static str {
        match self {
            BreakerAction::ForceOpen => "Force open",
            BreakerAction::ForceClose => "Force closed",
            BreakerAction::Reset => "Reset",
        }
    }
}

impl fmt::Display for BreakerAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BreakerAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BreakerAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                format!("unknown breaker action {s:?}: use force-open, force-close or reset")
            })
    }
}

/// Admissions and refusals in one second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondCount {
    pub admitted: u32,
    pub refused: u32,
}

/// A limiter, now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimiterView {
    pub name: String,
    /// `gcra` or `leaky-bucket`.
    pub kind: String,
    /// `process` or `shared`.
    pub scope: String,
    pub rate_per_sec: f64,
    pub burst: f64,
    /// What could pass right now (GCRA's remaining cells; the bucket's free capacity).
    pub available: f64,
    /// Callers waiting for admission.
    pub waiters: u32,
    pub admitted: u64,
    pub refused: u64,
    /// Writes to the store (shared limiters: one per leased chunk).
    pub store_writes: u64,
    /// The last [`HISTORY_SECONDS`] seconds, oldest first; the last entry is the current second.
    pub per_second: Vec<SecondCount>,
}

/// One recorded breaker transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransitionView {
    pub at_ms: i64,
    pub from: BreakerStatus,
    pub to: BreakerStatus,
    pub cause: String,
}

/// A breaker, now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerView {
    pub name: String,
    pub status: BreakerStatus,
    /// Percent; `None` below the minimum number of calls.
    pub failure_rate: Option<f64>,
    pub slow_rate: Option<f64>,
    pub failure_threshold: f64,
    pub slow_threshold: f64,
    pub calls_in_window: u32,
    /// `last 100 calls` or `last 60 s`.
    pub window: String,
    pub minimum_calls: u32,
    /// Milliseconds until a probe may go (open only).
    pub half_open_in_ms: Option<i64>,
    pub probes_left: u32,
    pub succeeded: u64,
    pub failed: u64,
    pub rejected: u64,
    /// Oldest first.
    pub transitions: Vec<TransitionView>,
}

/// A per-activity concurrency limit, now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcurrencyView {
    pub activity: String,
    pub max: u32,
    pub in_flight: u32,
    pub waiting: u32,
}

/// The start intake (load levelling): live instances against the bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeView {
    /// Pending, running and suspended instances, as this process last knew them.
    pub live: u64,
    /// The bound; `None`: unbounded.
    pub max: Option<u64>,
    /// Starts refused so far.
    pub refused: u64,
}

/// Everything one process publishes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResilienceSnapshot {
    pub process: String,
    pub at_ms: i64,
    pub limiters: Vec<LimiterView>,
    pub breakers: Vec<BreakerView>,
    pub concurrency: Vec<ConcurrencyView>,
    pub intake: IntakeView,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_statuses_round_trip_by_name() {
        for action in BreakerAction::ALL {
            assert_eq!(action.as_str().parse::<BreakerAction>(), Ok(action));
            let json = serde_json::to_string(&action).unwrap();
            assert_eq!(json, format!("\"{}\"", action.as_str()));
        }
        assert!("open".parse::<BreakerAction>().is_err());
        let open = BreakerStatus::from(BreakerState::Open {
            until: 1,
            attempts: 1,
        });
        assert_eq!(serde_json::to_string(&open).unwrap(), "\"open\"");
        assert!(open.rejects() && !BreakerStatus::HalfOpen.rejects());
    }
}
