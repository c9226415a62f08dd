//! The page shown for dashboard areas whose navigation entry exists but whose screens are still
//! being built. It says so plainly instead of pretending to show data.

use leptos::prelude::*;
use leptos_meta::Title;

/// A clearly labelled placeholder for an area that is not built yet.
#[component]
pub fn Planned(area: &'static str) -> impl IntoView {
    view! {
        <Title text=area />
        <h1>{area}</h1>
        <p class="notice" data-testid="planned-area">
            {format!("The {area} screens are not built yet. This entry reserves their place in the navigation.")}
        </p>
    }
}
