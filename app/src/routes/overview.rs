//! The overview page: instance counts per status, and the pipeline check: a value stored in the database, read
//! through a server function during server rendering and changed by a button that only works once
//! the page has hydrated. It proves SSR, hydration, server functions and the database end to end.

use leptos::prelude::*;
use leptos_meta::Title;

use crate::{
    error::AppError,
    models::{STATUSES, StatusCount},
};

/// The counter the pipeline check reads and increments.
pub const PIPELINE_COUNTER: &str = "pipeline-check";

/// Reads the pipeline-check counter (0 before its first increment).
#[server(prefix = "/api/fn", endpoint = "counter/get")]
pub async fn get_counter() -> Result<i64, AppError> {
    let db = crate::context::database()?;
    Ok(ssr::read_counter(&db, PIPELINE_COUNTER).await?)
}

/// Adds one to the pipeline-check counter and returns the new value. Needs the operator role.
#[server(prefix = "/api/fn", endpoint = "counter/increment")]
pub async fn increment_counter() -> Result<i64, AppError> {
    use crate::audit::ssr::{Action, guarded};
    let db = crate::context::database()?;
    let audit = Action {
        name: "increment-counter",
        target: PIPELINE_COUNTER,
        reason: "",
    };
    guarded(crate::session::Role::Operator, audit, async {
        Ok(ssr::increment_counter(&db, PIPELINE_COUNTER).await?)
    })
    .await
}

/// Instance counts per status, as the engine maintains them; `None` when the engine does not run
/// on this server's database backend.
#[server(prefix = "/api/fn", endpoint = "instances/counts")]
pub async fn status_counts() -> Result<Option<Vec<StatusCount>>, AppError> {
    let Some(engine) = leptos::prelude::use_context::<crate::EngineClient>() else {
        return Ok(None);
    };
    let counts = engine
        .status_counts()
        .await
        .map_err(|e| AppError::from(e).with_status())?;
    Ok(Some(
        counts
            .into_iter()
            .map(|(status, count)| StatusCount {
                status: status.to_string(),
                count,
            })
            .collect(),
    ))
}

/// The overview page.
#[component]
pub fn Overview() -> impl IntoView {
    view! {
        <Title text="Overview" />
        <h1>"Overview"</h1>
        <StatusCounts />
        <PipelineCheck />
    }
}

/// One tile per status; each links to the list filtered by it.
#[component]
fn StatusCounts() -> impl IntoView {
    let counts = Resource::new(|| (), |_| status_counts());
    view! {
        <section class="card" aria-labelledby="counts-title" data-testid="status-counts">
            <h2 id="counts-title">"Instances by status"</h2>
            <Suspense fallback=|| view! { <p>"…"</p> }>
                {move || counts.get().map(|result| match result {
                    Ok(None) => view! {
                        <p class="notice" data-testid="engine-unavailable">
                            "Orchestrations are not available on this database backend yet (the engine runs on SQLite)."
                        </p>
                    }
                    .into_any(),
                    Ok(Some(counts)) => {
                        let by_name = |name: &str| {
                            counts.iter().find(|c| c.status == name).map_or(0, |c| c.count)
                        };
                        view! {
                            <ul class="tiles">
                                {STATUSES
                                    .iter()
                                    .map(|s| view! {
                                        <li>
                                            <a href=format!("/instances?status={s}") data-testid=format!("count-{s}")>
                                                <span class="tile-count">{by_name(s)}</span>
                                                <span class="tile-label">{*s}</span>
                                            </a>
                                        </li>
                                    })
                                    .collect_view()}
                            </ul>
                        }
                        .into_any()
                    }
                    Err(e) => view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any(),
                })}
            </Suspense>
        </section>
    }
}

/// A stored value and a button that increments it; the button is enabled by hydration.
#[component]
fn PipelineCheck() -> impl IntoView {
    let increment = ServerAction::<IncrementCounter>::new();
    let value = Resource::new(move || increment.version().get(), |_| get_counter());
    // Effects never run during server rendering, so this flips only in a hydrated page.
    let (hydrated, set_hydrated) = signal(false);
    Effect::new(move |_| set_hydrated.set(true));

    let shown = move || {
        value.get().map(|result| match result {
            Ok(v) => view! { <output data-testid="counter-value">{v}</output> }.into_any(),
            Err(e) => view! { <span class="error" role="alert">{e.to_string()}</span> }.into_any(),
        })
    };
    let action_error = move || {
        increment
            .value()
            .get()
            .and_then(Result::err)
            .map(|e| view! { <p class="error" role="alert">{e.to_string()}</p> })
    };

    view! {
        <section class="card" data-testid="pipeline-check" aria-labelledby="pipeline-check-title">
            <h2 id="pipeline-check-title">"Pipeline check"</h2>
            <p>
                "This number is stored in the database. The button works once the page has hydrated."
            </p>
            <p class="counter">
                "Stored value: "
                <Suspense fallback=|| view! { <span>"…"</span> }>{shown}</Suspense>
            </p>
            <button
                type="button"
                data-testid="increment"
                data-hydrated=move || hydrated.get().to_string()
                disabled=move || !hydrated.get() || increment.pending().get()
                on:click=move |_| {
                    increment.dispatch(IncrementCounter {});
                }
            >
                "Increment"
            </button>
            {action_error}
        </section>
    }
}

#[cfg(feature = "ssr")]
mod ssr {
    //! Server-only helpers for the overview page's server functions.

    use engine::{Database, DbError};

    pub async fn read_counter(db: &Database, name: &str) -> Result<i64, DbError> {
        const SQL: &str = "SELECT value FROM counters WHERE name = $1";
        let value: Option<i64> = match db {
            Database::Sqlite(pool) => {
                sqlx::query_scalar(SQL)
                    .bind(name)
                    .fetch_optional(pool)
                    .await?
            }
            Database::Postgres(pool) => {
                sqlx::query_scalar(SQL)
                    .bind(name)
                    .fetch_optional(pool)
                    .await?
            }
        };
        Ok(value.unwrap_or(0))
    }

    pub async fn increment_counter(db: &Database, name: &str) -> Result<i64, DbError> {
        // One statement, so concurrent increments never lose an update on either backend.
        const SQL: &str = "INSERT INTO counters (name, value) VALUES ($1, 1) \
                           ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 \
                           RETURNING value";
        let value = match db {
            Database::Sqlite(pool) => sqlx::query_scalar(SQL).bind(name).fetch_one(pool).await?,
            Database::Postgres(pool) => sqlx::query_scalar(SQL).bind(name).fetch_one(pool).await?,
        };
        Ok(value)
    }
}
