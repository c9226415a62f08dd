//! Components shared by several pages.

pub mod chart;
pub mod layout;
pub mod shortcuts;
pub mod time;
