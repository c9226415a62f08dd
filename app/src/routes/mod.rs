//! One module per page of the dashboard.

pub mod approvals;
pub mod audit;
pub mod bulk;
pub mod detail;
pub mod entities;
pub mod instances;
pub mod not_found;
pub mod overview;
pub mod resilience;
pub mod runaways;
pub mod start;
pub mod tokens;
