//! The audit log page: every mutating action, newest first, filterable by actor, action and
//! target prefix through the URL (`/audit?action=terminate&actor=alice`), paged by id.

use leptos::prelude::*;
use leptos_meta::Title;
use leptos_router::hooks::use_query_map;

use crate::{
    audit::{AuditEntry, AuditFilter},
    error::AppError,
    models::{format_utc, url_component},
};

/// Entries per page.
pub const AUDIT_PAGE: i64 = 100;

/// Audit entries matching `filter`, newest first. Any signed-in user may read them.
#[server(prefix = "/api/fn", endpoint = "audit/list")]
pub async fn list_audit(
    #[server(default)] filter: AuditFilter,
) -> Result<Vec<AuditEntry>, AppError> {
    if filter.before.is_some_and(|b| b <= 0) {
        return Err(AppError::Validation("before must be a positive id".into()).with_status());
    }
    let db = crate::context::database()?;
    Ok(crate::audit::ssr::list(&db, &filter, AUDIT_PAGE).await?)
}

/// The audit page.
#[component]
pub fn AuditLog() -> impl IntoView {
    let query = use_query_map();
    let filter = move || {
        query.with(|q| {
            let text = |k: &str| q.get(k).filter(|v| !v.trim().is_empty());
            let before = match text("before") {
                None => Ok(None),
                Some(b) => b
                    .parse::<i64>()
                    .map(Some)
                    .map_err(|_| format!("before must be a whole number, not {b:?}")),
            };
            before.map(|before| AuditFilter {
                actor: text("actor"),
                action: text("action"),
                target_prefix: text("target"),
                before,
            })
        })
    };
    let entries = Resource::new(filter, |filter| async move {
        match filter {
            Ok(filter) => list_audit(filter).await,
            Err(problem) => Err(AppError::Validation(problem)),
        }
    });
    let value = move |key: &str| query.with(|q| q.get(key).unwrap_or_default());
    view! {
        <Title text="Audit" />
        <h1>"Audit log"</h1>
        <form method="get" action="/audit" class="filters-form" data-testid="audit-filter">
            <label>"Actor "<input type="text" name="actor" value=move || value("actor") data-shortcut="filter" /></label>
            <label>"Action "<input type="text" name="action" value=move || value("action") /></label>
            <label>"Target starts with "<input type="text" name="target" value=move || value("target") /></label>
            <button type="submit" class="secondary">"Filter"</button>
        </form>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || entries.get().map(|result| match result {
                Ok(rows) if rows.is_empty() => view! {
                    <p class="notice" data-testid="no-audit">"No audit entries match."</p>
                }.into_any(),
                Ok(rows) => {
                    let next = (rows.len() as i64 == AUDIT_PAGE).then(|| {
                        let last = rows.last().map_or(0, |r| r.id);
                        let keep = |k: &str| {
                            let v = value(k);
                            if v.is_empty() { String::new() } else { format!("&{k}={}", url_component(&v)) }
                        };
                        let href = format!("/audit?before={last}{}{}{}", keep("actor"), keep("action"), keep("target"));
                        view! { <a class="next" href=href>"Older entries →"</a> }
                    });
                    view! {
                        <table class="instances" data-testid="audit">
                            <thead><tr>
                                <th scope="col">"Time (UTC)"</th><th scope="col">"Actor"</th><th scope="col">"Role"</th>
                                <th scope="col">"Action"</th><th scope="col">"Target"</th><th scope="col">"Reason"</th><th scope="col">"Outcome"</th>
                            </tr></thead>
                            <tbody>
                                {rows.into_iter().map(|e| {
                                    let class = if e.outcome == "ok" { "outcome-ok" } else { "outcome-bad" };
                                    view! {
                                        <tr data-testid="audit-row">
                                            <td>{format_utc(e.at)}</td>
                                            <td>{e.actor}</td>
                                            <td>{e.role}</td>
                                            <td>{e.action}</td>
                                            <td><code>{e.target}</code></td>
                                            <td>{e.reason}</td>
                                            <td class=class>{e.outcome}</td>
                                        </tr>
                                    }
                                }).collect_view()}
                            </tbody>
                        </table>
                        {next}
                    }.into_any()
                }
                Err(e) => view! { <p class="error" role="alert" data-testid="audit-error">{e.to_string()}</p> }.into_any(),
            })}
        </Suspense>
    }
}
