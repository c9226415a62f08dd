//! The Start page: pick a registered orchestration, give its JSON input and optionally an
//! instance id. The input starts as an example generated from the orchestration's input schema
//! (derived from its Rust type, see `engine::schema`) and is checked in the browser against
//! that schema before submit; the server decodes and validates it again.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::{
    error::AppError,
    session::{Role, can},
};

/// A registered orchestration and what its input looks like.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OrchestrationInput {
    pub name: String,
    /// An input generated from the input type's JSON Schema (JSON text), or `null`.
    pub example: String,
    /// The input type's JSON Schema (JSON text), when the orchestration describes it.
    pub schema: Option<String>,
}

/// Registered orchestrations, by name, with an example input each.
#[server(prefix = "/api/fn", endpoint = "orchestrations")]
pub async fn orchestrations() -> Result<Vec<OrchestrationInput>, AppError> {
    let engine = crate::context::engine()?;
    Ok(engine
        .orchestration_names()
        .into_iter()
        .map(|name| {
            let schema = engine.input_schema(name);
            OrchestrationInput {
                name: name.to_owned(),
                example: schema.as_ref().map_or_else(
                    || "null".to_owned(),
                    |s| {
                        serde_json::to_string_pretty(&crate::json::example(s))
                            .unwrap_or_else(|_| "null".to_owned())
                    },
                ),
                schema: schema.map(|s| s.to_string()),
            }
        })
        .collect())
}

/// Why `text` does not fit `info`'s input schema, if it does not (and it has one).
fn schema_problem(info: Option<&OrchestrationInput>, text: &str) -> Option<String> {
    let schema: serde_json::Value = serde_json::from_str(info?.schema.as_deref()?).ok()?;
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    crate::json::check(&schema, &value).err()
}

/// Starts `name` with `input` (JSON); returns the instance id. Needs the operator role.
#[server(prefix = "/api/fn", endpoint = "instances/start")]
pub async fn start_instance(
    name: String,
    input: String,
    instance_id: Option<String>,
    start_at: Option<String>,
) -> Result<String, AppError> {
    use crate::audit::ssr::{Action, guarded};
    let target = match &instance_id {
        Some(id) if !id.trim().is_empty() => format!("{name} as {}", id.trim()),
        _ => name.clone(),
    };
    let audit = Action {
        name: "start",
        target: &target,
        reason: "",
    };
    guarded(
        crate::session::Role::Operator,
        audit,
        ssr::start(name.clone(), input, instance_id, start_at),
    )
    .await
}

/// Why `text` is not acceptable JSON input, if it is not.
pub fn json_problem(text: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(text)
        .err()
        .map(|e| format!("not valid JSON: {e}"))
}

/// The Start page.
#[component]
pub fn Start() -> impl IntoView {
    let names = Resource::new(|| (), |_| orchestrations());
    let start = ServerAction::<StartInstance>::new();
    let (name, set_name) = signal(String::new());
    let name_now = name;
    // What the operator typed; `None` shows the chosen orchestration's example.
    let draft = RwSignal::new(None::<String>);
    let info = move |n: &str| {
        names
            .get()
            .and_then(Result::ok)
            .and_then(|list| list.into_iter().find(|i| i.name == n))
    };
    let input = move || {
        draft
            .get()
            .unwrap_or_else(|| info(&name.get()).map_or_else(|| "null".to_owned(), |i| i.example))
    };
    let (instance_id, set_instance_id) = signal(String::new());
    let (start_at, set_start_at) = signal(String::new());
    let start_at_problem = move || {
        start_at.with(|t| {
            (!t.trim().is_empty() && crate::models::parse_utc(t).is_none())
                .then(|| "use YYYY-MM-DD HH:MM (UTC), or leave empty to start now".to_owned())
        })
    };
    let problem = move || {
        let text = input();
        json_problem(&text).or_else(|| schema_problem(info(&name.get()).as_ref(), &text))
    };
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| set_hydrated.set(true));
    // What the select shows, even when it was changed before the page hydrated (its change
    // event then reached no handler, so `name` still holds the first option).
    let select = NodeRef::<leptos::html::Select>::new();
    let chosen = move || {
        select
            .get()
            .map(|s| s.value())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| name.get())
    };

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let name = chosen();
        if name != name_now.get_untracked() {
            // Chosen before hydration: check the input against that orchestration's schema.
            set_name.set(name.clone());
        }
        if problem().is_some() || start_at_problem().is_some() || name.is_empty() {
            return;
        }
        let id = instance_id.get();
        let at = start_at.get();
        start.dispatch(StartInstance {
            name,
            input: input(),
            instance_id: (!id.trim().is_empty()).then(|| id.trim().to_owned()),
            start_at: (!at.trim().is_empty()).then(|| at.trim().to_owned()),
        });
    };

    view! {
        <Title text="Start" />
        <h1>"Start an orchestration"</h1>
        <Suspense fallback=|| ()>
        <Show when=move || can(Role::Operator) fallback=|| view! {
            <p class="notice" data-testid="start-operator-only">"Starting orchestrations needs the operator role; you can read everything else."</p>
        }>
        <form class="card form" on:submit=submit data-testid="start-form">
            <label for="start-name">"Orchestration"</label>
            <Suspense fallback=|| view! { <p>"…"</p> }>
                {move || names.get().map(|result| match result {
                    Ok(list) => {
                        if name.get_untracked().is_empty()
                            && let Some(first) = list.first()
                        {
                            set_name.set(first.name.clone());
                        }
                        view! {
                            <select id="start-name" data-testid="start-name" node_ref=select
                                on:change=move |ev| {
                                    // A new choice shows its own example.
                                    draft.set(None);
                                    set_name.set(event_target_value(&ev));
                                }>
                                {list.into_iter().map(|i| {
                                    let n = i.name;
                                    let selected = n == name.get_untracked();
                                    let label = n.clone();
                                    view! { <option value=n selected=selected>{label}</option> }
                                }).collect_view()}
                            </select>
                        }.into_any()
                    }
                    Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                })}
            </Suspense>
            <label for="start-input">"Input (JSON)"</label>
            <textarea id="start-input" data-testid="start-input" rows="5"
                aria-invalid=move || problem().is_some().to_string()
                aria-describedby="start-input-problem"
                prop:value=input
                on:input=move |ev| draft.set(Some(event_target_value(&ev)))></textarea>
            <p id="start-input-problem" class="error" data-testid="start-input-problem" aria-live="polite">
                {problem}
            </p>
            <label for="start-id">"Instance id (optional)"</label>
            <input id="start-id" data-testid="start-id" type="text"
                prop:value=instance_id
                on:input=move |ev| set_instance_id.set(event_target_value(&ev)) />
            <label for="start-at">"Start at, UTC (optional)"</label>
            <input id="start-at" data-testid="start-at" type="text" placeholder="YYYY-MM-DD HH:MM"
                aria-describedby="start-at-problem"
                prop:value=start_at
                on:input=move |ev| set_start_at.set(event_target_value(&ev)) />
            <p id="start-at-problem" class="error" aria-live="polite">{start_at_problem}</p>
            <button type="submit" data-testid="start-submit"
                disabled=move || !hydrated.get() || problem().is_some() || start_at_problem().is_some() || start.pending().get()>
                "Start"
            </button>
            {move || start.value().get().map(|result| match result {
                Ok(id) => view! {
                    <p class="ok" role="status" data-testid="start-result">
                        "Started " <code>{id}</code> ". " <a href="/instances">"See the instances"</a>
                    </p>
                }.into_any(),
                Err(e) => view! { <p class="error" role="alert" data-testid="start-error">{e.to_string()}</p> }.into_any(),
            })}
        </form>
        </Show>
        </Suspense>
    }
}

#[cfg(feature = "ssr")]
pub mod ssr {
    //! Server side of the Start page.

    use crate::{EngineClient, context::engine, error::AppError};

    pub async fn start(
        name: String,
        input: String,
        instance_id: Option<String>,
        start_at: Option<String>,
    ) -> Result<String, AppError> {
        let started_by = crate::session::ssr::current_user().map(|u| u.name);
        start_with(&engine()?, name, input, instance_id, start_at, started_by).await
    }

    /// Starts `name` with JSON `input`, checked first, optionally at a UTC time
    /// (`YYYY-MM-DD HH:MM`; a time in the past starts now). Who started it is kept in the
    /// [`STARTED_BY_TAG`](crate::models::STARTED_BY_TAG) tag, for the approvals inbox.
    pub async fn start_with(
        engine: &EngineClient,
        name: String,
        input: String,
        instance_id: Option<String>,
        start_at: Option<String>,
        started_by: Option<String>,
    ) -> Result<String, AppError> {
        if let Some(problem) = super::json_problem(&input) {
            return Err(AppError::Validation(format!("input is {problem}")));
        }
        let scheduled_start_at = match start_at.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(crate::models::parse_utc(text).ok_or_else(|| {
                AppError::Validation(format!(
                    "start time {text:?} is not valid: use YYYY-MM-DD HH:MM (UTC)"
                ))
            })?),
        };
        let options = engine::StartOptions {
            instance_id,
            scheduled_start_at,
            tags: started_by
                .map(|who| {
                    (
                        crate::models::STARTED_BY_TAG.to_owned(),
                        at_most_256_bytes(who),
                    )
                })
                .into_iter()
                .collect(),
        };
        Ok(engine.start_raw(&name, &input, options).await?)
    }

    /// A user name cut to the engine's 256-byte limit on tag values (at a character boundary):
    /// an identity provider's very long name must not stop its user from starting anything.
    fn at_most_256_bytes(mut name: String) -> String {
        let mut end = name.len().min(256);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
        name
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn a_long_user_name_is_cut_at_a_character_boundary() {
            assert_eq!(super::at_most_256_bytes("alice".into()), "alice");
            let long = "é".repeat(200); // 400 bytes
            let cut = super::at_most_256_bytes(long);
            assert_eq!(cut.len(), 256);
            assert!(cut.chars().all(|c| c == 'é'));
        }
    }
}
