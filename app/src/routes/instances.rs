//! The instance list, newest first by default. Every filter lives in the URL, so a view can be
//! bookmarked and shared: `status`, `name`, `id` (prefix), `from`/`to` (created, UTC dates),
//! `tag` (`key=value`), `sort` (`created` or `updated`), `order` (`desc` or `asc`), and the page
//! `cursor`. The server validates each and answers a bad one with 400 and a message.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;
use serde::{Deserialize, Serialize};

use crate::{
    components::time::Ago,
    error::AppError,
    models::{InstanceList, STATUSES, format_duration, url_component},
    routes::bulk::BulkPanel,
    session::{Role, can},
};

/// Instances per page.
pub const PAGE_SIZE: u32 = 50;

/// The list's filters, as text from the URL; the server parses and checks them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceFilter {
    pub status: Option<String>,
    pub name: Option<String>,
    pub id_prefix: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub tag: Option<String>,
    pub sort: Option<String>,
    pub order: Option<String>,
    pub cursor: Option<String>,
}

/// The URL query keys of [`InstanceFilter`]'s fields, in order.
const KEYS: [&str; 9] = [
    "status", "name", "id", "from", "to", "tag", "sort", "order", "cursor",
];

impl InstanceFilter {
    fn from_query(get: impl Fn(&str) -> Option<String>) -> InstanceFilter {
        let text = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        InstanceFilter {
            status: text("status"),
            name: text("name"),
            id_prefix: text("id"),
            from: text("from"),
            to: text("to"),
            tag: text("tag"),
            sort: text("sort"),
            order: text("order"),
            cursor: text("cursor"),
        }
    }

    fn values(&self) -> [&Option<String>; 9] {
        [
            &self.status,
            &self.name,
            &self.id_prefix,
            &self.from,
            &self.to,
            &self.tag,
            &self.sort,
            &self.order,
            &self.cursor,
        ]
    }

    /// `/api/v1/export/instances?format=…&…`: everything these filters match (the page cursor
    /// left out), as a CSV or JSON download.
    pub fn export_href(&self, format: &str) -> String {
        let mut query: Vec<String> = KEYS
            .iter()
            .zip(self.values())
            .filter(|(k, _)| **k != "cursor")
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", url_component(v))))
            .collect();
        query.insert(0, format!("format={format}"));
        format!("/api/v1/export/instances?{}", query.join("&"))
    }

    /// `/instances?…` for these filters.
    pub fn href(&self) -> String {
        let query: Vec<String> = KEYS
            .iter()
            .zip(self.values())
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", url_component(v))))
            .collect();
        if query.is_empty() {
            "/instances".to_owned()
        } else {
            format!("/instances?{}", query.join("&"))
        }
    }
}

/// A page of instances matching `filter`.
#[server(prefix = "/api/fn", endpoint = "instances/list")]
pub async fn list_instances(
    #[server(default)] filter: InstanceFilter,
) -> Result<InstanceList, AppError> {
    ssr::list(filter).await.map_err(AppError::with_status)
}

/// The instances page.
#[component]
pub fn Instances() -> impl IntoView {
    let query = use_query_map();
    let filter = move || query.with(|q| InstanceFilter::from_query(|k| q.get(k)));
    // Refetched when the pushed counts change, so statuses move without a reload.
    let counts = crate::live::pushed(|s| s.counts.clone());
    let page = Resource::new(
        move || (filter(), counts()),
        |(filter, _)| list_instances(filter),
    );
    let current = move || filter().status.unwrap_or_default();
    let with_status = move |status: Option<&str>| {
        InstanceFilter {
            status: status.map(str::to_owned),
            cursor: None,
            ..filter()
        }
        .href()
    };
    let value = move |key: &str| query.with(|q| q.get(key).unwrap_or_default());
    // How many match, from the maintained counts, when the filter is at most a status (other
    // filters would need a count query per page view).
    let total = move || {
        let f = filter();
        let only_status = [&f.name, &f.id_prefix, &f.from, &f.to, &f.tag]
            .iter()
            .all(|v| v.is_none());
        let counts = counts()?;
        only_status.then(|| {
            counts
                .iter()
                .filter(|c| f.status.as_ref().is_none_or(|s| *s == c.status))
                .map(|c| c.count)
                .sum::<i64>()
        })
    };
    view! {
        <Title text="Instances" />
        <h1>"Instances"</h1>
        <nav class="filters" aria-label="Filter by status" data-testid="status-filter">
            <a href=move || with_status(None) aria-current=move || current().is_empty().then_some("page")>"All"</a>
            {STATUSES
                .iter()
                .map(|s| view! {
                    <a href=move || with_status(Some(s)) aria-current=move || (current() == *s).then_some("page")>{*s}</a>
                })
                .collect_view()}
        </nav>
        <form method="get" action="/instances" class="filter-bar" data-testid="instance-filter" role="search"
            aria-label="Filter instances">
            <input type="hidden" name="status" value=move || value("status") />
            <label class="field wide"><span>"Orchestration"</span>
                <input type="search" name="name" value=move || value("name") data-testid="filter-name"
                    data-shortcut="filter" placeholder="any" /></label>
            <label class="field wide"><span>"Id starts with"</span>
                <input type="search" name="id" value=move || value("id") placeholder="any" /></label>
            <label class="field"><span>"Created from (UTC)"</span>
                <input type="text" name="from" placeholder="YYYY-MM-DD" value=move || value("from") /></label>
            <label class="field"><span>"to (UTC)"</span>
                <input type="text" name="to" placeholder="YYYY-MM-DD HH:MM" value=move || value("to") /></label>
            <label class="field"><span>"Tag"</span>
                <input type="text" name="tag" placeholder="key=value" value=move || value("tag") /></label>
            <label class="field"><span>"Sort by"</span>
                <select name="sort">
                    <option value="created" selected=move || value("sort") != "updated">"created"</option>
                    <option value="updated" selected=move || value("sort") == "updated">"last change"</option>
                </select>
            </label>
            <label class="field"><span>"Order"</span>
                <select name="order">
                    <option value="desc" selected=move || value("order") != "asc">"newest first"</option>
                    <option value="asc" selected=move || value("order") == "asc">"oldest first"</option>
                </select>
            </label>
            <div class="bar-actions">
                <button type="submit">"Apply"</button>
                <a class="button-link secondary" href="/instances">"Clear"</a>
            </div>
        </form>
        <p class="export hint" data-testid="export">
            {move || total().map(|n| view! {
                <span data-testid="instance-total">{format!("{n} matching instances")}</span>
                " · "
            })}
            "Export what this filter matches (up to 100,000 rows): "
            <a href=move || filter().export_href("csv") download="instances.csv" data-testid="export-csv">"CSV"</a>
            " · "
            <a href=move || filter().export_href("json") download="instances.json" data-testid="export-json">"JSON"</a>
        </p>
        <Suspense fallback=|| ()>
            {move || can(Role::Admin).then(|| view! { <BulkPanel filter=Signal::derive(filter) /> })}
        </Suspense>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || page.get().map(|result| match result {
                Ok(list) => view! { <InstanceTable list filter=filter() /> }.into_any(),
                Err(e) => view! { <p class="error" role="alert" data-testid="list-error">{e.to_string()}</p> }.into_any(),
            })}
        </Transition>
    }
}

#[component]
fn InstanceTable(list: InstanceList, filter: InstanceFilter) -> impl IntoView {
    if list.instances.is_empty() {
        return view! { <p class="notice" data-testid="no-instances">"No instances match."</p> }
            .into_any();
    }
    let next = list.next_cursor.map(|cursor| {
        let href = InstanceFilter {
            cursor: Some(cursor),
            ..filter
        }
        .href();
        view! { <a class="next" href=href data-testid="next-page">"Next page →"</a> }
    });
    let as_of = list.as_of;
    view! {
        <table class="instances" data-testid="instance-table">
            <thead>
                <tr><th scope="col">"Instance"</th><th scope="col">"Orchestration"</th><th scope="col">"Status"</th><th scope="col">"Duration"</th><th scope="col">"Created"</th><th scope="col">"Last change"</th></tr>
            </thead>
            <tbody>
                {list
                    .instances
                    .into_iter()
                    .map(|i| {
                        let class = format!("status status-{}", i.status.to_lowercase());
                        view! {
                        <tr data-testid="instance-row">
                            <td><a href=format!("/instances/{}", url_component(&i.instance_id))><code>{i.instance_id.clone()}</code></a></td>
                            <td>{i.name}</td>
                            <td><span class=class>{i.status}</span></td>
                            <td class="nowrap" data-testid="instance-duration">
                                {i.completed_at.map_or_else(|| "–".to_owned(), |end| format_duration(end - i.created_at))}
                            </td>
                            <td class="nowrap"><Ago at=i.created_at as_of /></td>
                            <td class="nowrap"><Ago at=i.updated_at as_of /></td>
                        </tr>
                        }
                    })
                    .collect_view()}
            </tbody>
        </table>
        {next}
    }
    .into_any()
}

#[cfg(feature = "ssr")]
pub mod ssr {
    //! Server side of the instance list: validate the filter, query the engine.

    use engine::{
        RuntimeStatus,
        store::{InstanceQuery, SortBy},
    };

    use super::{InstanceFilter, PAGE_SIZE};
    use crate::{
        context::engine,
        error::AppError,
        models::{InstanceList, InstanceSummary, parse_utc},
    };

    /// Checks every filter and turns it into the engine's query.
    pub fn query(filter: InstanceFilter) -> Result<InstanceQuery, AppError> {
        let bad = |what: &str, value: &str, expected: &str| {
            AppError::Validation(format!("{what} {value:?} is not valid: {expected}"))
        };
        let statuses = match filter.status.as_deref() {
            None => Vec::new(),
            Some(s) => vec![s.parse::<RuntimeStatus>().map_err(|_| {
                AppError::Validation(format!(
                    "unknown status {s:?}; use one of Pending, Running, Suspended, Completed, \
                     Failed, Terminated, Canceled, ContinuedAsNew"
                ))
            })?],
        };
        let date = |value: &Option<String>, what: &str| {
            value
                .as_deref()
                .map(|v| {
                    parse_utc(v)
                        .ok_or_else(|| bad(what, v, "use YYYY-MM-DD or YYYY-MM-DD HH:MM (UTC)"))
                })
                .transpose()
        };
        let created_from = date(&filter.from, "from")?;
        let created_to = date(&filter.to, "to")?;
        if let (Some(from), Some(to)) = (created_from, created_to)
            && from > to
        {
            return Err(AppError::Validation("from is after to".into()));
        }
        let mut tags = std::collections::BTreeMap::new();
        if let Some(tag) = &filter.tag {
            let (k, v) = tag
                .split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .ok_or_else(|| bad("tag", tag, "use key=value"))?;
            tags.insert(k.trim().to_owned(), v.trim().to_owned());
        }
        let sort = match filter.sort.as_deref() {
            None | Some("created") => SortBy::Created,
            Some("updated") => SortBy::Updated,
            Some(other) => return Err(bad("sort", other, "use created or updated")),
        };
        let descending = match filter.order.as_deref() {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(other) => return Err(bad("order", other, "use desc or asc")),
        };
        for (what, value) in [("name", &filter.name), ("id", &filter.id_prefix)] {
            if value.as_ref().is_some_and(|v| v.len() > 200) {
                return Err(AppError::Validation(format!(
                    "{what} is longer than 200 bytes"
                )));
            }
        }
        // System instances (bulk jobs) stay out of the list unless asked for by name.
        let hide_system = !filter
            .name
            .as_deref()
            .is_some_and(|n| engine::system::is_system(n.trim()));
        Ok(InstanceQuery {
            statuses,
            name: filter.name.map(|n| n.trim().to_owned()),
            created_from,
            created_to,
            id_prefix: filter.id_prefix,
            tags,
            sort,
            descending,
            page_size: PAGE_SIZE,
            cursor: filter.cursor,
            hide_system,
        })
    }

    pub async fn list(filter: InstanceFilter) -> Result<InstanceList, AppError> {
        list_with(&engine()?, filter).await
    }

    /// A page of instances matching `filter` (checked first).
    pub async fn list_with(
        engine: &crate::EngineClient,
        filter: InstanceFilter,
    ) -> Result<InstanceList, AppError> {
        let page = engine.query(&query(filter)?).await?;
        Ok(InstanceList {
            as_of: crate::context::now_ms(),
            instances: page
                .instances
                .into_iter()
                .map(|r| InstanceSummary {
                    instance_id: r.instance_id,
                    name: r.name,
                    status: r.status.to_string(),
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                    completed_at: r.completed_at,
                })
                .collect(),
            next_cursor: page.next_cursor,
        })
    }
}
