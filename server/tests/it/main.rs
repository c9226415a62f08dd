//! Integration tests for the server: the real binary's start-up behaviour and the HTTP surface.
//!
//! One test binary with a module per area, so the crate links once.

mod cli;
mod http;
mod postgres;
mod roles;
