//! The API tokens page (administrators): create a token for a script, see it once, list and
//! revoke tokens.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::{
    models::format_utc,
    session::{Role, can},
    tokens::{
        ApiToken, CreateToken, MAX_DAYS, MAX_NAME, RevokeToken, TokenState, list_tokens, valid_name,
    },
};

/// Days a new token lives unless the administrator says otherwise.
const DEFAULT_DAYS: u32 = 90;

/// The API tokens page.
#[component]
pub fn ApiTokens() -> impl IntoView {
    let create = ServerAction::<CreateToken>::new();
    let revoke = ServerAction::<RevokeToken>::new();
    let tokens = Resource::new(
        move || (create.version().get(), revoke.version().get()),
        |_| list_tokens(),
    );
    let (name, set_name) = signal(String::new());
    let (role, set_role) = signal(Role::Viewer);
    let (days, set_days) = signal(DEFAULT_DAYS.to_string());
    // Whether the user has typed a name or tried to submit: no complaint before that.
    let (touched, set_touched) = signal(false);
    // What is wrong with the form, checked as the user types; the server checks again.
    let problem = move || {
        if let Err(e) = valid_name(&name.get()) {
            return Some(e.to_string());
        }
        match days.get().trim().parse::<u32>() {
            Ok(d) if (1..=MAX_DAYS).contains(&d) => None,
            _ => Some(format!("the lifetime must be 1 to {MAX_DAYS} days")),
        }
    };
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        set_touched.set(true);
        if problem().is_some() {
            return;
        }
        create.dispatch(CreateToken {
            name: name.get(),
            role: role.get(),
            days: days.get().trim().parse().unwrap_or(DEFAULT_DAYS),
        });
    };
    let created = move || {
        create.value().get().map(|result| match result {
            Ok(new) => view! {
                <div class="card notice" role="status" data-testid="new-token-card">
                    <p>
                        "Token " <strong>{new.token.name.clone()}</strong> " (" {new.token.role.label()}
                        ") created. Copy it now: it is not shown again."
                    </p>
                    <p><code class="secret" data-testid="new-token">{new.secret}</code></p>
                    <p>"Scripts send it as " <code>"Authorization: Bearer …"</code> " to the JSON API under " <code>"/api/v1"</code> "."</p>
                </div>
            }
            .into_any(),
            Err(e) => view! { <p class="error" role="alert" data-testid="token-error">{e.to_string()}</p> }.into_any(),
        })
    };
    view! {
        <Title text="API tokens" />
        <h1>"API tokens"</h1>
        <p>"Tokens let scripts call the JSON API with a role of their own. Every call is checked and audited like a person's."</p>
        <Suspense fallback=|| ()>
        <Show when=move || can(Role::Admin) fallback=|| view! {
            <p class="notice" data-testid="tokens-admin-only">"Only administrators manage API tokens."</p>
        }>
            <form class="card form" on:submit=submit data-testid="token-form">
                <label for="token-name">"Name"</label>
                <input id="token-name" type="text" maxlength=MAX_NAME.to_string() data-testid="token-name"
                    placeholder="nightly-cleanup" prop:value=name
                    on:input=move |ev| {
                        set_touched.set(true);
                        set_name.set(event_target_value(&ev));
                    } />
                <label for="token-role">"Role"</label>
                <select id="token-role" data-testid="token-role"
                    on:change=move |ev| set_role.set(Role::from_label(&event_target_value(&ev)).unwrap_or(Role::Viewer))>
                    {[Role::Viewer, Role::Operator, Role::Admin].into_iter().map(|r| view! {
                        <option value=r.label() selected=move || role.get() == r>{r.label()}</option>
                    }).collect_view()}
                </select>
                <label for="token-days">"Lifetime (days)"</label>
                <input id="token-days" type="number" min="1" max=MAX_DAYS.to_string() data-testid="token-days"
                    prop:value=days on:input=move |ev| set_days.set(event_target_value(&ev)) />
                {move || problem().filter(|_| touched.get()).map(|p| view! { <p class="hint" data-testid="token-problem">{p}</p> })}
                <button type="submit" data-testid="create-token"
                    disabled=move || (touched.get() && problem().is_some()) || create.pending().get()>"Create token"</button>
            </form>
            {created}
        </Show>
        </Suspense>
        {move || revoke.value().get().and_then(Result::err).map(|e| view! {
            <p class="error" role="alert" data-testid="revoke-error">{e.to_string()}</p>
        })}
        // The list is for administrators only: others were told so above, not shown a 403.
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || tokens.get().filter(|_| can(Role::Admin)).map(|result| match result {
                Ok(list) if list.is_empty() => view! {
                    <p class="notice" data-testid="no-tokens">"No API tokens yet."</p>
                }.into_any(),
                Ok(list) => view! { <TokenTable list revoke /> }.into_any(),
                Err(e) => view! { <p class="error" role="alert" data-testid="tokens-error">{e.to_string()}</p> }.into_any(),
            })}
        </Suspense>
    }
}

#[component]
fn TokenTable(list: Vec<ApiToken>, revoke: ServerAction<RevokeToken>) -> impl IntoView {
    view! {
        <table class="instances" data-testid="tokens">
            <thead><tr>
                <th scope="col">"Name"</th><th scope="col">"Id"</th><th scope="col">"Role"</th>
                <th scope="col">"Created (UTC)"</th><th scope="col">"By"</th><th scope="col">"Expires (UTC)"</th>
                <th scope="col">"Last used (UTC)"</th><th scope="col">"State"</th><th scope="col"><span class="visually-hidden">"Actions"</span></th>
            </tr></thead>
            <tbody>
                {list.into_iter().map(|t| {
                    let state = t.state.label();
                    let id = t.id.clone();
                    view! {
                        <tr data-testid="token-row" data-token=t.id.clone() data-state=state>
                            <td>{t.name.clone()}</td>
                            <td><code>{t.id.clone()}</code></td>
                            <td>{t.role.label()}</td>
                            <td>{format_utc(t.created_at)}</td>
                            <td>{t.created_by.clone()}</td>
                            <td>{format_utc(t.expires_at)}</td>
                            <td>{t.last_used_at.map_or_else(|| "never".to_owned(), format_utc)}</td>
                            <td>{state}</td>
                            <td>
                                {(t.state == TokenState::Active).then(|| view! {
                                    <button type="button" class="secondary" data-testid="revoke-token"
                                        aria-label=format!("Revoke token {}", t.name)
                                        disabled=move || revoke.pending().get()
                                        on:click=move |_| { revoke.dispatch(RevokeToken { id: id.clone() }); }>
                                        "Revoke"
                                    </button>
                                })}
                            </td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
}
