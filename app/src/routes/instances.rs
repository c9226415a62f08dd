//! The instance list: instances newest first, filtered by status through the URL
//! (`/instances?status=Running`), with cursor paging (`&cursor=…`). Read-only for now; actions
//! arrive with login and roles.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::{
    error::AppError,
    models::{InstanceList, STATUSES, format_utc, url_component},
};

/// Instances per page.
pub const PAGE_SIZE: u32 = 50;

/// A page of instances, newest first, optionally with one status.
#[server(prefix = "/api/fn", endpoint = "instances/list")]
pub async fn list_instances(
    status: Option<String>,
    cursor: Option<String>,
) -> Result<InstanceList, AppError> {
    ssr::list(status, cursor)
        .await
        .map_err(AppError::with_status)
}

/// The instances page.
#[component]
pub fn Instances() -> impl IntoView {
    let query = use_query_map();
    let filter = move || {
        query.with(|q| {
            (
                q.get("status").filter(|s| !s.is_empty()),
                q.get("cursor").filter(|s| !s.is_empty()),
            )
        })
    };
    let page = Resource::new(filter, |(status, cursor)| list_instances(status, cursor));
    let current = move || query.with(|q| q.get("status").unwrap_or_default());

    view! {
        <Title text="Instances" />
        <h1>"Instances"</h1>
        <nav class="filters" aria-label="Filter by status" data-testid="status-filter">
            <a href="/instances" aria-current=move || current().is_empty().then_some("page")>"All"</a>
            {STATUSES
                .iter()
                .map(|s| {
                    let href = format!("/instances?status={s}");
                    view! {
                        <a href=href aria-current=move || (current() == *s).then_some("page")>{*s}</a>
                    }
                })
                .collect_view()}
        </nav>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || page.get().map(|result| match result {
                Ok(list) => view! { <InstanceTable list /> }.into_any(),
                Err(e) => view! { <p class="error" role="alert" data-testid="list-error">{e.to_string()}</p> }.into_any(),
            })}
        </Suspense>
    }
}

#[component]
fn InstanceTable(list: InstanceList) -> impl IntoView {
    if list.instances.is_empty() {
        return view! { <p class="notice" data-testid="no-instances">"No instances match."</p> }
            .into_any();
    }
    let next = list.next_cursor.map(|cursor| {
        let query = use_query_map();
        let status = query.with_untracked(|q| q.get("status").unwrap_or_default());
        let href = format!(
            "/instances?status={}&cursor={}",
            url_component(&status),
            url_component(&cursor)
        );
        view! { <a class="next" href=href>"Next page →"</a> }
    });
    view! {
        <table class="instances" data-testid="instance-table">
            <thead>
                <tr><th scope="col">"Instance"</th><th scope="col">"Orchestration"</th><th scope="col">"Status"</th><th scope="col">"Created (UTC)"</th><th scope="col">"Last change (UTC)"</th></tr>
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
                            <td>{format_utc(i.created_at)}</td>
                            <td>{format_utc(i.updated_at)}</td>
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
mod ssr {
    //! Server side of the instance list: validate the filter, query the engine.

    use engine::{
        RuntimeStatus,
        store::{InstanceQuery, SortBy},
    };

    use super::PAGE_SIZE;
    use crate::{
        context::engine,
        error::AppError,
        models::{InstanceList, InstanceSummary},
    };

    pub async fn list(
        status: Option<String>,
        cursor: Option<String>,
    ) -> Result<InstanceList, AppError> {
        let statuses = match status.as_deref() {
            None => Vec::new(),
            Some(s) => vec![s.parse::<RuntimeStatus>().map_err(|_| {
                AppError::Validation(format!(
                    "unknown status {s:?}; use one of Pending, Running, Suspended, Completed, \
                     Failed, Terminated, Canceled, ContinuedAsNew"
                ))
            })?],
        };
        let page = engine()?
            .query(&InstanceQuery {
                statuses,
                sort: SortBy::Created,
                descending: true,
                page_size: PAGE_SIZE,
                cursor,
                ..InstanceQuery::default()
            })
            .await?;
        Ok(InstanceList {
            instances: page
                .instances
                .into_iter()
                .map(|r| InstanceSummary {
                    instance_id: r.instance_id,
                    name: r.name,
                    status: r.status.to_string(),
                    created_at: r.created_at,
                    updated_at: r.updated_at,
                })
                .collect(),
            next_cursor: page.next_cursor,
        })
    }
}
