//! The page for unknown paths; it also sets the HTTP status to 404 during server rendering.

use leptos::prelude::*;
use leptos_meta::Title;

/// Rendered for any path no route matches.
#[component]
pub fn NotFound() -> impl IntoView {
    #[cfg(feature = "ssr")]
    {
        if let Some(response) = use_context::<leptos_axum::ResponseOptions>() {
            response.set_status(http::StatusCode::NOT_FOUND);
        }
    }
    view! {
        <Title text="Not found" />
        <h1>"Page not found"</h1>
        <p>"Nothing lives at this address. Use the navigation above."</p>
    }
}
