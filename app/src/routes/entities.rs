//! Durable entities: the list, filtered in the URL (`name`, `key` prefix, `transient`, `locked`,
//! the page `cursor`), and one entity's page: its state as formatted JSON, its last operations,
//! its backlog and lock holder (linked to the instance), and the verbs on it. Operators signal
//! an operation with a JSON input; admins delete (purge) an entity and release a lock, each with
//! a reason and the entity's id typed as confirmation, and clean storage (release the locks
//! whose holder is no longer live). Every verb is audited; both pages follow the entities live
//! over the existing channel (`/api/live`), so a signalled counter rises without a reload.

use engine_core::entity::RecentOperation;
use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::{use_params_map, use_query_map};
use serde::{Deserialize, Serialize};

use crate::{
    error::AppError,
    models::{format_utc, url_component},
    session::{Role, can},
};

/// Entities per page.
pub const PAGE_SIZE: u32 = 50;
/// Longest state preview in the list, in characters.
const PREVIEW_CHARS: usize = 80;

/// The list's filters, as text from the URL; the server checks them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityFilter {
    /// Entity type (any case).
    pub name: Option<String>,
    /// Key prefix (with `name`).
    pub key_prefix: Option<String>,
    /// Also entities without state that are locked or have messages waiting.
    #[serde(default)]
    pub transient: bool,
    /// Only locked entities.
    #[serde(default)]
    pub locked: bool,
    pub cursor: Option<String>,
}

impl EntityFilter {
    fn from_query(get: impl Fn(&str) -> Option<String>) -> EntityFilter {
        let text = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let flag = |k: &str| text(k).is_some_and(|v| v == "1" || v == "on" || v == "true");
        EntityFilter {
            name: text("name"),
            key_prefix: text("key"),
            transient: flag("transient"),
            locked: flag("locked"),
            cursor: text("cursor"),
        }
    }

    /// `/entities?…` for these filters.
    pub fn href(&self) -> String {
        let mut query = Vec::new();
        let mut push = |k: &str, v: &str| query.push(format!("{k}={}", url_component(v)));
        if let Some(name) = &self.name {
            push("name", name);
        }
        if let Some(key) = &self.key_prefix {
            push("key", key);
        }
        if self.transient {
            push("transient", "1");
        }
        if self.locked {
            push("locked", "1");
        }
        if let Some(cursor) = &self.cursor {
            push("cursor", cursor);
        }
        if query.is_empty() {
            "/entities".to_owned()
        } else {
            format!("/entities?{}", query.join("&"))
        }
    }
}

/// One row of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct EntitySummary {
    pub entity_id: String,
    pub name: String,
    pub key: String,
    /// The state's JSON, cut to a preview; `None` for a transient entity.
    pub preview: Option<String>,
    pub last_modified: i64,
    pub backlog: u64,
    pub locked_by: Option<String>,
}

/// A page of the list, with every match counted and the registered types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct EntityList {
    pub entities: Vec<EntitySummary>,
    pub next_cursor: Option<String>,
    pub total: u64,
    /// Registered entity types, for the filter.
    pub types: Vec<String>,
}

/// One entity's page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct EntityDetail {
    pub entity_id: String,
    pub name: String,
    pub key: String,
    /// The state as JSON text (a JSON value on the wire, see [`crate::json`]); `None` when it
    /// has none (transient).
    #[serde(with = "crate::json::text_opt", default)]
    #[cfg_attr(feature = "ssr", schema(value_type = Option<serde_json::Value>))]
    pub state: Option<String>,
    pub last_modified: i64,
    pub backlog: u64,
    pub locked_by: Option<String>,
    /// Oldest first.
    #[cfg_attr(feature = "ssr", schema(value_type = Vec<serde_json::Value>))]
    pub recent: Vec<RecentOperation>,
    /// The operations its type has, for the signal form.
    pub operations: Vec<String>,
}

/// A verb on an entity: who may use it and how the audit log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntityAction {
    Signal,
    Purge,
    ReleaseLock,
    CleanStorage,
}

impl EntityAction {
    /// The audit log's name for it.
    pub fn audit_name(self) -> &'static str {
        match self {
            EntityAction::Signal => "signal-entity",
            EntityAction::Purge => "purge-entity",
            EntityAction::ReleaseLock => "release-entity-lock",
            EntityAction::CleanStorage => "clean-entity-storage",
        }
    }

    /// The role it needs.
    pub fn needs(self) -> Role {
        match self {
            EntityAction::Signal => Role::Operator,
            _ => Role::Admin,
        }
    }
}

/// A page of entities matching `filter`.
#[server(prefix = "/api/fn", endpoint = "entities/list")]
pub async fn list_entities(
    #[server(default)] filter: EntityFilter,
) -> Result<EntityList, AppError> {
    ssr::list_with(&crate::context::engine()?, filter)
        .await
        .map_err(AppError::with_status)
}

/// One entity.
#[server(prefix = "/api/fn", endpoint = "entities/get")]
pub async fn get_entity(entity_id: String) -> Result<EntityDetail, AppError> {
    ssr::get_with(&crate::context::engine()?, &entity_id)
        .await
        .map_err(AppError::with_status)
}

/// Signals `operation` with `input` (JSON) to an entity. Needs the operator role.
#[server(prefix = "/api/fn", endpoint = "entities/signal")]
pub async fn signal_entity(
    entity_id: String,
    operation: String,
    input: String,
) -> Result<(), AppError> {
    use crate::audit::ssr::{Action, guarded};
    let target = format!("{entity_id} {operation}");
    let audit = Action {
        name: EntityAction::Signal.audit_name(),
        target: &target,
        reason: "",
    };
    let engine = crate::context::engine()?;
    guarded(
        EntityAction::Signal.needs(),
        audit,
        ssr::signal_with(&engine, &entity_id, &operation, &input, None),
    )
    .await
}

/// Deletes an entity, or releases its lock (`force`: even from a live holder). Needs the admin
/// role, a reason and the entity's id typed as `confirmation`.
#[server(prefix = "/api/fn", endpoint = "entities/admin")]
pub async fn entity_admin(
    entity_id: String,
    action: EntityAction,
    reason: String,
    confirmation: String,
    #[server(default)] force: bool,
) -> Result<String, AppError> {
    use crate::audit::ssr::{Action, guarded};
    let audit = Action {
        name: action.audit_name(),
        target: &entity_id,
        reason: &reason,
    };
    let engine = crate::context::engine()?;
    guarded(
        action.needs(),
        audit,
        ssr::admin_with(&engine, &entity_id, action, &reason, &confirmation, force),
    )
    .await
}

/// Clean storage: releases every lock whose holder is no longer live. Needs the admin role.
#[server(prefix = "/api/fn", endpoint = "entities/clean")]
pub async fn clean_entity_storage(reason: String) -> Result<u64, AppError> {
    use crate::audit::ssr::{Action, guarded};
    let audit = Action {
        name: EntityAction::CleanStorage.audit_name(),
        target: "entities",
        reason: &reason,
    };
    let engine = crate::context::engine()?;
    guarded(
        EntityAction::CleanStorage.needs(),
        audit,
        ssr::clean_with(&engine, &reason),
    )
    .await
}

/// The entities page.
#[component]
pub fn Entities() -> impl IntoView {
    let query = use_query_map();
    let filter = move || query.with(|q| EntityFilter::from_query(|k| q.get(k)));
    let clean = ServerAction::<CleanEntityStorage>::new();
    // Refetched whenever entity batches commit (pushed), so the list follows without a reload.
    let pushed = crate::live::pushed(|s| s.entity_batches);
    let page = Resource::new(
        move || (filter(), pushed(), clean.version().get()),
        |(filter, _, _)| list_entities(filter),
    );
    let value = move |key: &str| query.with(|q| q.get(key).unwrap_or_default());
    let checked = move |key: &str| !value(key).is_empty();
    view! {
        <Title text="Entities" />
        <h1>"Entities"</h1>
        <form method="get" action="/entities" class="filters-form" data-testid="entity-filter">
            <label>"Type "
                <select name="name" data-testid="filter-entity-type" data-shortcut="filter">
                    <option value="" selected=move || value("name").is_empty()>"all"</option>
                    <Suspense fallback=|| ()>
                        {move || page.get().and_then(Result::ok).map(|list| list.types.into_iter().map(|t| {
                            let selected = t.eq_ignore_ascii_case(&value("name"));
                            view! { <option value=t.clone() selected=selected>{t.clone()}</option> }
                        }).collect_view())}
                    </Suspense>
                </select>
            </label>
            <label>"Key starts with "<input type="text" name="key" value=move || value("key") data-testid="filter-key" /></label>
            <label><input type="checkbox" name="transient" value="1" checked=move || checked("transient") />" include without state"</label>
            <label><input type="checkbox" name="locked" value="1" checked=move || checked("locked") />" locked only"</label>
            <button type="submit" class="secondary">"Apply"</button>
        </form>
        <Suspense fallback=|| ()>
            {move || can(Role::Admin).then(|| view! { <CleanStorage clean /> })}
        </Suspense>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || page.get().map(|result| match result {
                Ok(list) => view! { <EntityTable list filter=filter() /> }.into_any(),
                Err(e) => view! { <p class="error" role="alert" data-testid="entity-list-error">{e.to_string()}</p> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn CleanStorage(clean: ServerAction<CleanEntityStorage>) -> impl IntoView {
    let (reason, set_reason) = signal(String::new());
    view! {
        <details class="card" data-testid="clean-storage">
            <summary>"Clean storage"</summary>
            <p>"Releases every lock whose holder is no longer running or suspended (failed, terminated, purged or gone). Live holders keep theirs."</p>
            <label for="clean-reason">"Reason"</label>
            <input id="clean-reason" type="text" data-testid="clean-reason"
                prop:value=reason on:input=move |ev| set_reason.set(event_target_value(&ev)) />
            <div class="actions">
                <button type="button" data-testid="clean-run" disabled=move || clean.pending().get()
                    on:click=move |_| { clean.dispatch(CleanEntityStorage { reason: reason.get() }); }>"Release orphaned locks"</button>
            </div>
            {move || clean.value().get().map(|r| match r {
                Ok(n) => view! { <p class="notice" role="status" data-testid="clean-result">{format!("Released {n} orphaned lock(s).")}</p> }.into_any(),
                Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
            })}
        </details>
    }
}

#[component]
fn EntityTable(list: EntityList, filter: EntityFilter) -> impl IntoView {
    let total = list.total;
    if list.entities.is_empty() {
        return view! { <p class="notice" data-testid="no-entities">"No entities match."</p> }
            .into_any();
    }
    let next = list.next_cursor.map(|cursor| {
        let href = EntityFilter {
            cursor: Some(cursor),
            ..filter
        }
        .href();
        view! { <a class="next" href=href data-testid="entities-next-page">"Next page →"</a> }
    });
    view! {
        <p data-testid="entity-total">{total_text(total)}</p>
        <table class="instances" data-testid="entity-table">
            <thead>
                <tr><th scope="col">"Entity"</th><th scope="col">"Type"</th><th scope="col">"State"</th><th scope="col">"Backlog"</th><th scope="col">"Locked by"</th><th scope="col">"Last change (UTC)"</th></tr>
            </thead>
            <tbody>
                {list.entities.into_iter().map(|e| view! {
                    <tr data-testid="entity-row" data-entity=e.entity_id.clone()>
                        <td><a href=format!("/entities/{}", url_component(&e.entity_id))><code>{e.key.clone()}</code></a></td>
                        <td>{e.name}</td>
                        <td><code class="preview">{e.preview.unwrap_or_else(|| "(no state)".into())}</code></td>
                        <td>{e.backlog}</td>
                        <td>{e.locked_by.map(|holder| view! {
                            <a href=format!("/instances/{}", url_component(&holder))><code>{holder.clone()}</code></a>
                        })}</td>
                        <td>{format_utc(e.last_modified)}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
        {next}
    }
    .into_any()
}

/// What the user has typed into the entity page's forms: kept by the page, so a live refresh
/// (which rebuilds the entity's view) does not wipe a half-typed input.
#[derive(Clone, Copy)]
struct Drafts {
    operation: RwSignal<String>,
    input: RwSignal<String>,
    reason: RwSignal<String>,
    confirmation: RwSignal<String>,
    force: RwSignal<bool>,
}

impl Default for Drafts {
    fn default() -> Self {
        Drafts {
            operation: RwSignal::new(String::new()),
            input: RwSignal::new("null".to_owned()),
            reason: RwSignal::new(String::new()),
            confirmation: RwSignal::new(String::new()),
            force: RwSignal::new(false),
        }
    }
}

/// One entity's page.
#[component]
pub fn EntityDetailPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").unwrap_or_default());
    let signal_action = ServerAction::<SignalEntity>::new();
    let admin = ServerAction::<EntityAdmin>::new();
    let drafts = Drafts::default();
    let pushed = crate::live::pushed(|s| s.entity_batches);
    let detail = Resource::new(
        move || {
            (
                id(),
                pushed(),
                signal_action.version().get(),
                admin.version().get(),
            )
        },
        |(id, _, _, _)| get_entity(id),
    );
    view! {
        <Title text=move || format!("Entity {}", id()) />
        <p><a href="/entities">"← Entities"</a></p>
        <h1>"Entity " <code>{id}</code></h1>
        // Outside the entity's view: a deleted entity's page still says what happened.
        {move || admin.value().get().map(|r| match r {
            Ok(message) => view! { <p class="notice" role="status" data-testid="admin-result">{message}</p> }.into_any(),
            Err(e) => view! { <p class="error" role="alert" data-testid="admin-error">{e.to_string()}</p> }.into_any(),
        })}
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || detail.get().map(|result| match result {
                Ok(detail) => view! { <EntityView detail signal_action admin drafts /> }.into_any(),
                Err(e) => view! { <p class="error" role="alert" data-testid="entity-error">{e.to_string()}</p> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn EntityView(
    detail: EntityDetail,
    signal_action: ServerAction<SignalEntity>,
    admin: ServerAction<EntityAdmin>,
    drafts: Drafts,
) -> impl IntoView {
    let state = detail
        .state
        .as_deref()
        .map(crate::json::pretty)
        .unwrap_or_else(|| "(no state: the entity is locked or has messages waiting)".into());
    let holder = detail.locked_by.clone().map(|holder| {
        view! { <a href=format!("/instances/{}", url_component(&holder)) data-testid="entity-holder"><code>{holder.clone()}</code></a> }
    });
    let recent = detail.recent.clone();
    let (signal_id, admin_id) = (detail.entity_id.clone(), detail.entity_id.clone());
    let operations = detail.operations.clone();
    let locked = detail.locked_by.is_some();
    view! {
        <section class="card" aria-labelledby="entity-summary-title">
            <h2 id="entity-summary-title" class="visually-hidden">"Summary"</h2>
            <dl class="summary" data-testid="entity-summary">
                <dt>"Type"</dt><dd>{detail.name.clone()}</dd>
                <dt>"Key"</dt><dd><code>{detail.key.clone()}</code></dd>
                <dt>"Last change (UTC)"</dt><dd>{format_utc(detail.last_modified)}</dd>
                <dt>"Backlog"</dt><dd data-testid="entity-backlog">{detail.backlog}</dd>
                <dt>"Locked by"</dt><dd>{match holder {
                    Some(link) => link.into_any(),
                    None => "nobody".into_any(),
                }}</dd>
                <dt>"State"</dt><dd><pre class="state" tabindex="0" data-testid="entity-state">{state}</pre></dd>
            </dl>
        </section>
        <section class="card" aria-labelledby="recent-title">
            <h2 id="recent-title">"Recent operations"</h2>
            {if recent.is_empty() {
                view! { <p class="notice">"No operations recorded yet."</p> }.into_any()
            } else {
                view! {
                    <table class="instances" data-testid="entity-recent">
                        <thead><tr><th scope="col">"Time (UTC)"</th><th scope="col">"Operation"</th><th scope="col">"From"</th><th scope="col">"Outcome"</th></tr></thead>
                        <tbody>
                            {recent.into_iter().rev().map(|op| view! {
                                <tr>
                                    <td>{format_utc(op.at)}</td>
                                    <td><code>{op.operation}</code></td>
                                    <td>{op.caller.map_or_else(|| "signal".into_any(), |c| view! {
                                        <a href=format!("/instances/{}", url_component(&c))><code>{c.clone()}</code></a>
                                    }.into_any())}</td>
                                    <td>{op.failed.map_or_else(
                                        || view! { <span class="outcome-ok">"ok"</span> }.into_any(),
                                        |f| view! { <span class="outcome-bad">{format!("failed: {f} (undone)")}</span> }.into_any(),
                                    )}</td>
                                </tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
            }}
        </section>
        <Show when=move || can(Role::Operator) fallback=|| view! {
            <p class="notice" data-testid="entity-operator-only">"Signalling an entity needs the operator role."</p>
        }>
            <SignalForm entity_id=signal_id.clone() operations=operations.clone() signal_action drafts />
        </Show>
        <Show when=move || can(Role::Admin) fallback=|| ()>
            <AdminForm entity_id=admin_id.clone() locked admin drafts />
        </Show>
    }
}

#[component]
fn SignalForm(
    entity_id: String,
    operations: Vec<String>,
    signal_action: ServerAction<SignalEntity>,
    drafts: Drafts,
) -> impl IntoView {
    let Drafts {
        operation, input, ..
    } = drafts;
    if operation.get_untracked().is_empty()
        && let Some(first) = operations.first()
    {
        operation.set(first.clone());
    }
    let send = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        signal_action.dispatch(SignalEntity {
            entity_id: entity_id.clone(),
            operation: operation.get(),
            input: input.get(),
        });
    };
    view! {
        <section class="card" aria-labelledby="signal-title" data-testid="entity-signal">
            <h2 id="signal-title">"Signal"</h2>
            <form class="form" on:submit=send>
                <label for="signal-operation">"Operation"</label>
                <select id="signal-operation" data-testid="signal-operation"
                    on:change=move |ev| operation.set(event_target_value(&ev))>
                    {operations.into_iter().map(|op| {
                        let selected = op == operation.get_untracked();
                        view! { <option value=op.clone() selected=selected>{op.clone()}</option> }
                    }).collect_view()}
                </select>
                <label for="signal-input">"Input (JSON)"</label>
                <textarea id="signal-input" rows="3" data-testid="signal-input"
                    prop:value=input on:input=move |ev| input.set(event_target_value(&ev))></textarea>
                <button type="submit" data-testid="signal-send" disabled=move || signal_action.pending().get()>"Signal"</button>
            </form>
            {move || signal_action.value().get().map(|r| match r {
                Ok(()) => view! { <p class="notice" role="status" data-testid="signal-result">"Signalled: the operation is queued."</p> }.into_any(),
                Err(e) => view! { <p class="error" role="alert" data-testid="signal-error">{e.to_string()}</p> }.into_any(),
            })}
        </section>
    }
}

#[component]
fn AdminForm(
    entity_id: String,
    locked: bool,
    admin: ServerAction<EntityAdmin>,
    drafts: Drafts,
) -> impl IntoView {
    let Drafts {
        reason,
        confirmation,
        force,
        ..
    } = drafts;
    let id = StoredValue::new(entity_id.clone());
    let run = move |action: EntityAction| {
        move |_| {
            admin.dispatch(EntityAdmin {
                entity_id: id.get_value(),
                action,
                reason: reason.get(),
                confirmation: confirmation.get(),
                force: force.get(),
            });
        }
    };
    let typed = move || confirmation.get().trim() == id.get_value();
    view! {
        <section class="card" aria-labelledby="admin-title" data-testid="entity-admin">
            <h2 id="admin-title">"Administer"</h2>
            <p class="hint">"Deleting removes the entity at once (refused while it is locked or has messages queued). Releasing a lock frees it for the work waiting behind it; the holder's next call fails with LockLost."</p>
            <div class="form">
                <label for="admin-reason">"Reason"</label>
                <input id="admin-reason" type="text" data-testid="admin-reason"
                    prop:value=reason on:input=move |ev| reason.set(event_target_value(&ev)) />
                <label for="admin-confirm">"Type " <code>{entity_id.clone()}</code> " to confirm"</label>
                <input id="admin-confirm" type="text" data-testid="admin-confirm" autocomplete="off"
                    prop:value=confirmation on:input=move |ev| confirmation.set(event_target_value(&ev)) />
                {locked.then(|| view! {
                    <label><input type="checkbox" data-testid="admin-force" prop:checked=force
                        on:change=move |ev| force.set(event_target_checked(&ev)) />" release even though the holder is still running"</label>
                })}
            </div>
            <div class="actions">
                <button type="button" class="danger" data-testid="entity-delete"
                    disabled=move || admin.pending().get() || !typed()
                    on:click=run(EntityAction::Purge)>"Delete entity"</button>
                {locked.then(|| view! {
                    <button type="button" class="secondary" data-testid="entity-release"
                        disabled=move || admin.pending().get() || !typed()
                        on:click=run(EntityAction::ReleaseLock)>"Release lock"</button>
                })}
            </div>
        </section>
    }
}

/// "3 entities match.", or "More than 10,000 entities match." past the count's cap.
fn total_text(total: u64) -> String {
    if total > ENTITY_COUNT_CAP {
        format!(
            "More than {} entities match.",
            group_thousands(ENTITY_COUNT_CAP)
        )
    } else {
        let noun = if total == 1 { "entity" } else { "entities" };
        format!("{} {noun} match.", group_thousands(total))
    }
}

/// `12345` → `12,345`.
fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Where the list's count stops (the engine's `ENTITY_COUNT_CAP`; the wasm build has no engine).
pub const ENTITY_COUNT_CAP: u64 = 10_000;

/// A preview of `json`: at most [`PREVIEW_CHARS`] characters, marked with `…` when cut.
pub fn preview(json: &str) -> String {
    crate::json::preview(json, PREVIEW_CHARS)
}

#[cfg(feature = "ssr")]
pub mod ssr {
    //! Server side of the entity pages and the JSON API: checks, then the engine's verbs.

    use engine::store::EntityQuery;

    use super::{EntityAction, EntityDetail, EntityFilter, EntityList, EntitySummary, PAGE_SIZE};
    use crate::{EngineClient, audit::ssr::required_reason, error::AppError};

    /// A page of entities matching `filter`, counted.
    const _: () = assert!(super::ENTITY_COUNT_CAP == engine::store::ENTITY_COUNT_CAP);

    pub async fn list_with(
        engine: &EngineClient,
        filter: EntityFilter,
    ) -> Result<EntityList, AppError> {
        let types: Vec<String> = engine.entity_types().into_iter().map(|(n, _)| n).collect();
        if let Some(name) = &filter.name
            && !types.iter().any(|t| t.eq_ignore_ascii_case(name.trim()))
        {
            return Err(AppError::Validation(format!(
                "no entity type named {name:?}; the types are {}",
                types.join(", ")
            )));
        }
        let query = EntityQuery {
            name: filter.name.map(|n| n.trim().to_owned()),
            key_prefix: filter.key_prefix,
            include_transient: filter.transient,
            locked_only: filter.locked,
            page_size: PAGE_SIZE,
            cursor: filter.cursor,
            count: true,
            ..EntityQuery::default()
        };
        let page = engine.query_entities(&query).await?;
        Ok(EntityList {
            total: page.total.unwrap_or(0),
            next_cursor: page.next_cursor,
            types,
            entities: page
                .entities
                .into_iter()
                .map(|e| EntitySummary {
                    preview: e.state.as_deref().map(super::preview),
                    entity_id: e.entity_id,
                    name: e.name,
                    key: e.key,
                    last_modified: e.last_modified,
                    backlog: e.backlog,
                    locked_by: e.locked_by,
                })
                .collect(),
        })
    }

    /// One entity, its state indented.
    pub async fn get_with(
        engine: &EngineClient,
        entity_id: &str,
    ) -> Result<EntityDetail, AppError> {
        let record = engine.get_entity(entity_id).await?;
        let operations = engine
            .entity_types()
            .into_iter()
            .find(|(n, _)| *n == record.name)
            .map(|(_, ops)| ops.into_iter().map(str::to_owned).collect())
            .unwrap_or_default();
        let state = record.state;
        Ok(EntityDetail {
            entity_id: record.entity_id,
            name: record.name,
            key: record.key,
            state,
            last_modified: record.last_modified,
            backlog: record.backlog,
            locked_by: record.locked_by,
            recent: record.recent,
            operations,
        })
    }

    /// Signals an operation; the engine refuses an unknown type or operation, a bad id, and an
    /// input that is not JSON, too large or of the wrong type.
    pub async fn signal_with(
        engine: &EngineClient,
        entity_id: &str,
        operation: &str,
        input: &str,
        request_id: Option<&str>,
    ) -> Result<(), AppError> {
        let input = if input.trim().is_empty() {
            "null"
        } else {
            input
        };
        engine
            .signal_entity_raw(entity_id, operation, input, None, request_id)
            .await?;
        Ok(())
    }

    /// Purges an entity or releases its lock, after the typed confirmation; returns what was
    /// done, for the page.
    pub async fn admin_with(
        engine: &EngineClient,
        entity_id: &str,
        action: EntityAction,
        reason: &str,
        confirmation: &str,
        force: bool,
    ) -> Result<String, AppError> {
        let reason = required_reason(reason)?;
        if confirmation.trim() != entity_id {
            return Err(AppError::Validation(format!(
                "type the entity's id, {entity_id}, to confirm"
            )));
        }
        match action {
            EntityAction::Purge => {
                engine.purge_entity(entity_id, reason).await?;
                Ok(format!("{entity_id} is being deleted."))
            }
            EntityAction::ReleaseLock => {
                let holder = engine.release_entity_lock(entity_id, force, reason).await?;
                Ok(format!("The lock {holder} held is being released."))
            }
            other => Err(AppError::Validation(format!(
                "{} is not a verb on one entity",
                other.audit_name()
            ))),
        }
    }

    /// Releases orphaned locks; returns how many.
    pub async fn clean_with(engine: &EngineClient, reason: &str) -> Result<u64, AppError> {
        required_reason(reason)?;
        Ok(engine.clean_entity_storage().await?.locks_released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_read_well_and_stop_at_the_cap() {
        assert_eq!(total_text(1), "1 entity match.");
        assert_eq!(total_text(1234), "1,234 entities match.");
        assert_eq!(
            total_text(ENTITY_COUNT_CAP + 1),
            "More than 10,000 entities match."
        );
    }

    #[test]
    fn filters_round_trip_through_the_url() {
        let filter = EntityFilter {
            name: Some("counter".into()),
            key_prefix: Some("a b".into()),
            transient: true,
            locked: false,
            cursor: None,
        };
        assert_eq!(
            filter.href(),
            "/entities?name=counter&key=a%20b&transient=1"
        );
        let back = EntityFilter::from_query(|k| match k {
            "name" => Some("counter".into()),
            "key" => Some("a b".into()),
            "transient" => Some("1".into()),
            _ => None,
        });
        assert_eq!(back, filter);
    }
}
