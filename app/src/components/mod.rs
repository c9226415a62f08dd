//! Components shared by several pages.

pub mod chart;
pub mod layout;
