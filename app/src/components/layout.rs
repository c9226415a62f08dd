//! The page frame: header with the product name and the primary navigation, then the page.
//!
//! Until OIDC login exists the server runs in local mode (loopback only, everyone is an
//! administrator), and the frame says so on every page.
//!
//! Navigation uses the router's `<A>` links, which mark the current page with `aria-current` for
//! assistive technology and for styling.

use leptos::prelude::*;
use leptos_router::components::A;

/// The primary navigation, in the order operators use it.
const NAV: &[(&str, &str)] = &[
    ("/", "Overview"),
    ("/instances", "Instances"),
    ("/start", "Start"),
    ("/approvals", "Approvals"),
    ("/entities", "Entities"),
    ("/resilience", "Resilience"),
    ("/audit", "Audit"),
];

/// Header, navigation and the main landmark around `children`.
#[component]
pub fn Layout(children: Children) -> impl IntoView {
    view! {
        <a class="skip-link" href="#main">"Skip to content"</a>
        <header class="site-header">
            <a class="brand" href="/">
                <span class="brand-mark" aria-hidden="true">"⇄"</span>
                "Switchyard"
            </a>
            <nav aria-label="Primary" data-testid="primary-nav">
                <ul>
                    {NAV
                        .iter()
                        .map(|(href, label)| view! { <li><A href=*href exact=true>{*label}</A></li> })
                        .collect_view()}
                </ul>
            </nav>
        </header>
        <p class="banner" role="status" data-testid="local-mode-banner">
            <strong>"Local mode."</strong>
            " There is no login: everyone who can reach this address acts as an administrator. The server only listens on this machine."
        </p>
        <main id="main" tabindex="-1">{children()}</main>
    }
}
