//! What a bulk job does to each instance, shared by the engine's bulk orchestration and the
//! dashboard's bulk panel (in the browser too), so the verbs, their labels and the states they
//! apply to are written once.

use serde::{Deserialize, Serialize};

use crate::history::RuntimeStatus;

/// Most instances one bulk job covers.
pub const MAX_BULK: u64 = 10_000;

/// The verb a bulk job applies to each instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BulkAction {
    Terminate,
    Suspend,
    Resume,
    Purge,
}

impl BulkAction {
    pub const ALL: [BulkAction; 4] = [
        BulkAction::Terminate,
        BulkAction::Suspend,
        BulkAction::Resume,
        BulkAction::Purge,
    ];

    pub fn label(self) -> &'static str {
        match self {
            BulkAction::Terminate => "terminate",
            BulkAction::Suspend => "suspend",
            BulkAction::Resume => "resume",
            BulkAction::Purge => "purge",
        }
    }

    /// "can be …" in the dry run's answer.
    pub fn past(self) -> &'static str {
        match self {
            BulkAction::Terminate => "terminated",
            BulkAction::Suspend => "suspended",
            BulkAction::Resume => "resumed",
            BulkAction::Purge => "purged",
        }
    }

    /// The action named by its label.
    pub fn parse(label: &str) -> Option<BulkAction> {
        BulkAction::ALL.into_iter().find(|a| a.label() == label)
    }

    /// Terminate and purge cannot be undone: they need a typed confirmation.
    pub fn destructive(self) -> bool {
        matches!(self, BulkAction::Terminate | BulkAction::Purge)
    }

    /// The text the user must type to confirm a destructive action on `eligible` instances.
    pub fn confirmation(self, eligible: u64) -> String {
        format!("{} {eligible}", self.label())
    }

    /// Whether the action applies to an instance in `status` (`shared/docs/semantics.md`).
    pub fn applies_to(self, status: RuntimeStatus) -> bool {
        match self {
            BulkAction::Terminate => !status.is_terminal(),
            BulkAction::Suspend => status == RuntimeStatus::Running,
            BulkAction::Resume => status == RuntimeStatus::Suspended,
            BulkAction::Purge => status.is_terminal(),
        }
    }
}
