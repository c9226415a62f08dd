//! Times as people read them in lists: relative (`3 min ago`), with the exact UTC time on hover
//! and in the `datetime` attribute. "Now" is the server's clock: the time of the answer the page
//! was rendered from, then the live feed's clock, so the server's HTML and the hydrated page
//! agree and the text keeps up without a reload.

use leptos::prelude::*;

use crate::models::{format_ago, format_utc};

/// The server's clock as the page knows it: the live feed's latest publish, never earlier than
/// `as_of` (when the data on the page was read).
pub fn server_now(as_of: i64) -> impl Fn() -> i64 + Copy + Send + Sync + 'static {
    let ticking = crate::live::pushed(|s| s.resilience.first().map(|r| r.at_ms));
    move || ticking().flatten().unwrap_or(as_of).max(as_of)
}

/// `<time>` showing how long ago `at` was (or how far ahead), exact UTC on hover.
#[component]
pub fn Ago(at: i64, as_of: i64) -> impl IntoView {
    let now = server_now(as_of);
    let exact = format_utc(at);
    view! {
        <time datetime=format!("{}Z", exact.replace(' ', "T")) title=format!("{exact} UTC")>
            {move || format_ago(now() - at)}
        </time>
    }
}
