//! The page frame: header with the product name, the primary navigation and who is signed in,
//! then the page.
//!
//! The frame loads the current user once ([`crate::session::whoami`]) and provides it to every
//! page, which hide what the role cannot do. In local mode (no login, loopback only, everyone is
//! an administrator) the frame says so on every page.
//!
//! Navigation uses the router's `<A>` links, which mark the current page with `aria-current` for
//! assistive technology and for styling.

use leptos::prelude::*;
use leptos_router::components::A;

use crate::session::{Role, UserResource, can, whoami};

/// The primary navigation, in the order operators use it, with the least role each area is for
/// (a viewer is not offered the Start page, which only operators can use).
const NAV: &[(&str, &str, Role)] = &[
    ("/", "Overview", Role::Viewer),
    ("/instances", "Instances", Role::Viewer),
    ("/start", "Start", Role::Operator),
    ("/approvals", "Approvals", Role::Viewer),
    ("/runaways", "Runaways", Role::Viewer),
    ("/entities", "Entities", Role::Viewer),
    ("/resilience", "Resilience", Role::Viewer),
    ("/audit", "Audit", Role::Viewer),
    ("/tokens", "API tokens", Role::Admin),
];

/// Header, navigation and the main landmark around `children`.
#[component]
pub fn Layout(children: Children) -> impl IntoView {
    let user: UserResource = Resource::new(|| (), |_| whoami());
    provide_context(user);
    let live: crate::live::LiveSignal = RwSignal::new(None);
    provide_context(live);
    crate::live::subscribe(live);
    // Effects run only in the browser: the header says when the page has hydrated.
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| set_hydrated.set(true));
    let who = move || {
        user.get().and_then(Result::ok).flatten().map(|u| {
            let local = u.local;
            view! {
                <div class="who" data-testid="who">
                    <span data-testid="user-name">{u.name}</span>
                    " · "
                    <span class="role" data-testid="user-role">{u.role.label()}</span>
                    {(!local).then(|| view! {
                        <form method="post" action="/auth/logout" class="inline">
                            <button type="submit" class="link" data-testid="logout">"Sign out"</button>
                        </form>
                    })}
                </div>
            }
        })
    };
    let local = move || {
        user.get()
            .and_then(Result::ok)
            .flatten()
            .is_some_and(|u| u.local)
    };
    view! {
        // `rel="external"`: the browser follows it natively, which moves focus into `<main>`;
        // the router's own handling would only scroll.
        <a class="skip-link" href="#main" rel="external">"Skip to content"</a>
        <header class="site-header" data-hydrated=move || hydrated.get().to_string()>
            <a class="brand" href="/">
                <span class="brand-mark" aria-hidden="true">"⇄"</span>
                "Switchyard"
            </a>
            <nav aria-label="Primary" data-testid="primary-nav">
                <ul>
                    {NAV
                        .iter()
                        .map(|&(href, label, least)| {
                            let link = move || view! { <li><A href=href exact=true>{label}</A></li> };
                            if least == Role::Viewer {
                                link().into_any()
                            } else {
                                view! { <Suspense fallback=|| ()>{move || can(least).then(link)}</Suspense> }.into_any()
                            }
                        })
                        .collect_view()}
                </ul>
            </nav>
            <Suspense fallback=|| ()>{who}</Suspense>
            <crate::components::shortcuts::Shortcuts />
        </header>
        <Suspense fallback=|| ()>
            <Show when=local>
                <p class="banner" role="status" data-testid="local-mode-banner">
                    <strong>"Local mode."</strong>
                    " There is no login: everyone who can reach this address acts as an administrator. The server only listens on this machine."
                </p>
            </Show>
        </Suspense>
        <main id="main" tabindex="-1">{children()}</main>
    }
}
