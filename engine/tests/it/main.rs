//! Integration tests for the engine, one module per area. `fixtures` holds the test
//! orchestrations and a tiny simulated runtime that drives the pure replay core.

mod conformance;
mod eager;
mod entities;
mod fixtures;
mod isolation;
mod locks;
mod replay;
mod replay_props;
mod resilience;
mod runtime;
