//! The Resilience page: every process's limiters (rate, burst, what passes now, waiters,
//! admitted and refused per second as a small chart), circuit breakers (state, failure and slow
//! rates against their thresholds, calls in the window, time until a probe, the last transitions
//! as a timeline), per-activity concurrency limits and the start intake. Live: it renders the
//! snapshot the server pushes every second over the existing channel (`LiveSnapshot::resilience`,
//! this process's own plus what the others published to the store), so states move without a
//! reload.
//!
//! Operators force-open, force-close and reset this server's breakers with a reason, and set the
//! flaky sample's failure rate; both are audited. Viewers see the state only: no control is
//! rendered for them, and the server functions refuse them (403).

use leptos::prelude::*;
use leptos_meta::Title;
use serde::{Deserialize, Serialize};

use engine_core::resilience::view::{
    BreakerAction, BreakerStatus, BreakerView, LimiterView, ResilienceSnapshot,
};

use crate::{
    error::AppError,
    models::format_utc,
    session::{Role, can},
};

/// What the page shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct ResilienceOverview {
    /// This server's process first, then the others that published recently.
    #[cfg_attr(feature = "ssr", schema(value_type = Vec<serde_json::Value>))]
    pub processes: Vec<ResilienceSnapshot>,
    /// The flaky sample dependency's failure rate, in percent.
    pub flaky_failure_percent: u32,
}

/// Longest an operator's reason may be, in bytes.
pub const MAX_REASON: usize = 1_000;

/// The state now (viewer).
#[server(prefix = "/api/fn", endpoint = "resilience/state")]
pub async fn resilience_state() -> Result<ResilienceOverview, AppError> {
    ssr::state(&crate::context::engine()?, crate::context::now_ms())
        .await
        .map_err(AppError::with_status)
}

/// Force-opens, force-closes or resets this server's breaker `name` (operator; audited).
#[server(prefix = "/api/fn", endpoint = "resilience/breaker")]
pub async fn act_on_breaker(
    name: String,
    action: BreakerAction,
    reason: String,
) -> Result<BreakerView, AppError> {
    use crate::audit::ssr::{Action, guarded};
    let audit_name = format!("breaker.{}", action.as_str());
    let audit = Action {
        name: &audit_name,
        target: &name,
        reason: &reason,
    };
    let engine = crate::context::engine()?;
    guarded(
        Role::Operator,
        audit,
        ssr::act(&engine, &name, action, &reason),
    )
    .await
}

/// Sets the flaky sample dependency's failure rate (operator; audited).
#[server(prefix = "/api/fn", endpoint = "resilience/flaky")]
pub async fn set_flaky_failure(percent: u32) -> Result<u32, AppError> {
    use crate::audit::ssr::{Action, guarded};
    let target = format!("{percent} %");
    let audit = Action {
        name: "sample.flaky-failure-rate",
        target: &target,
        reason: "",
    };
    guarded(Role::Operator, audit, ssr::set_flaky(percent)).await
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "–".to_owned(), |r| format!("{r:.0} %"))
}

fn status_class(status: BreakerStatus) -> &'static str {
    match status {
        BreakerStatus::Closed => "breaker breaker-closed",
        BreakerStatus::HalfOpen => "breaker breaker-half-open",
        BreakerStatus::Open | BreakerStatus::ForcedOpen => "breaker breaker-open",
        BreakerStatus::ForcedClosed => "breaker breaker-forced-closed",
    }
}

/// The page. The structure (one card per process, per breaker) is keyed and built once; only
/// the figures inside follow the pushed snapshot, so what an operator types (a breaker reason,
/// a failure rate, a message about it) survives the refresh every second.
#[component]
pub fn Resilience() -> impl IntoView {
    let pushed = crate::live::pushed(|s| s.resilience.clone());
    let flaky_pushed = crate::live::pushed(|s| s.flaky_failure_percent);
    let act = ServerAction::<ActOnBreaker>::new();
    let flaky = ServerAction::<SetFlakyFailure>::new();
    let initial = Resource::new(|| (), |_| resilience_state());
    // The pushed snapshot once it comes; the server's answer until then (and without script).
    let state = move || -> Option<Result<ResilienceOverview, AppError>> {
        match (pushed(), flaky_pushed()) {
            (Some(processes), Some(flaky_failure_percent)) if !processes.is_empty() => {
                Some(Ok(ResilienceOverview {
                    processes,
                    flaky_failure_percent,
                }))
            }
            _ => initial.get(),
        }
    };
    let overview = Memo::new(move |_| state().and_then(Result::ok));
    let names = move || {
        overview.with(|o| {
            o.iter()
                .flat_map(|o| o.processes.iter().map(|p| p.process.clone()))
                .collect::<Vec<_>>()
        })
    };
    let percent =
        Signal::derive(move || overview.with(|o| o.as_ref().map(|o| o.flaky_failure_percent)));
    view! {
        <Title text="Resilience" />
        <h1>"Resilience"</h1>
        <p class="hint">"Rate limiters, circuit breakers and concurrency limits the activities go through, per process, updated every second."</p>
        {move || act.value().get().and_then(Result::err).map(|e| view! {
            <p class="error" role="alert" data-testid="resilience-error">{e.to_string()}</p>
        })}
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            // Only the first answer decides what is built; the pushed figures flow through
            // `overview` into the cards without rebuilding them.
            {move || initial.get().map(|first| match first {
                Err(e) if overview.with_untracked(Option::is_none) => {
                    view! { <p class="error" role="alert">{e.to_string()}</p> }.into_any()
                }
                _ => view! {
                    <For each=names key=String::clone let(name)>
                        <ProcessView name overview act />
                    </For>
                    <SampleControls percent flaky />
                }.into_any(),
            })}
        </Suspense>
    }
}

#[component]
fn ProcessView(
    name: String,
    overview: Memo<Option<ResilienceOverview>>,
    act: ServerAction<ActOnBreaker>,
) -> impl IntoView {
    // The first process listed is the one serving this page.
    let here = overview.with_untracked(|o| {
        o.as_ref()
            .and_then(|o| o.processes.first())
            .is_some_and(|p| p.process == name)
    });
    let title = if here {
        format!("{name} (this server)")
    } else {
        name.clone()
    };
    let key = name.clone();
    let snapshot = Memo::new(move |_| {
        overview.with(|o| {
            o.as_ref()
                .and_then(|o| o.processes.iter().find(|p| p.process == key).cloned())
        })
    });
    let breaker_names = move || {
        snapshot.with(|s| {
            s.iter()
                .flat_map(|s| s.breakers.iter().map(|b| b.name.clone()))
                .collect::<Vec<_>>()
        })
    };
    view! {
        <section class="card" data-testid="process" data-process=name>
            <h2>{title}</h2>
            {move || snapshot.get().map(|snapshot| {
                let intake = snapshot.intake;
                view! {
                    <p class="hint" data-testid="intake">
                        {match intake.max {
                            Some(max) => format!("Start intake: {} of {} live instances; {} starts refused (429).", intake.live, max, intake.refused),
                            None => format!("Start intake: {} live instances, unbounded.", intake.live),
                        }}
                        " Published " {format_utc(snapshot.at_ms)} "."
                    </p>
                }
            })}
            <h3>"Circuit breakers"</h3>
            {move || snapshot.with(|s| s.as_ref().is_some_and(|s| s.breakers.is_empty())).then(|| view! {
                <p class="notice">"No circuit breaker is registered."</p>
            })}
            <div class="breakers">
                <For each=breaker_names key=String::clone let(breaker)>
                    <BreakerCard name=breaker snapshot here act />
                </For>
            </div>
            <h3>"Rate limiters"</h3>
            {move || snapshot.get().map(|snapshot| if snapshot.limiters.is_empty() {
                view! { <p class="notice">"No rate limiter is registered."</p> }.into_any()
            } else {
                view! {
                    <table class="instances" data-testid="limiters">
                        <thead><tr>
                            <th scope="col">"Limiter"</th><th scope="col">"Kind"</th><th scope="col">"Rate"</th>
                            <th scope="col">"Burst"</th><th scope="col">"Free now"</th><th scope="col">"Waiting"</th>
                            <th scope="col">"Admitted"</th><th scope="col">"Refused"</th><th scope="col">"Store writes"</th>
                            <th scope="col">"Last 60 s"</th>
                        </tr></thead>
                        <tbody>
                            {snapshot.limiters.into_iter().map(|l| view! { <LimiterRow l /> }).collect_view()}
                        </tbody>
                    </table>
                }.into_any()
            })}
            {move || snapshot.get().filter(|s| !s.concurrency.is_empty()).map(|snapshot| view! {
                <h3>"Concurrency limits"</h3>
                <table class="instances" data-testid="concurrency">
                    <thead><tr><th scope="col">"Activity"</th><th scope="col">"In flight"</th><th scope="col">"Waiting"</th></tr></thead>
                    <tbody>
                        {snapshot.concurrency.into_iter().map(|c| view! {
                            <tr><td>{c.activity}</td><td>{format!("{} / {}", c.in_flight, c.max)}</td><td>{c.waiting}</td></tr>
                        }).collect_view()}
                    </tbody>
                </table>
            })}
        </section>
    }
    .into_any()
}

/// One breaker: its figures follow the snapshot; the operator's controls are built once.
#[component]
fn BreakerCard(
    name: String,
    snapshot: Memo<Option<ResilienceSnapshot>>,
    here: bool,
    act: ServerAction<ActOnBreaker>,
) -> impl IntoView {
    let reason = RwSignal::new(String::new());
    let key = name.clone();
    let breaker = Memo::new(move |_| {
        snapshot.with(|s| {
            s.as_ref()
                .and_then(|s| s.breakers.iter().find(|b| b.name == key).cloned())
        })
    });
    let status = move || breaker.with(|b| b.as_ref().map(|b| b.status));
    let input_id = format!("reason-{name}");
    let data_breaker = name.clone();
    view! {
        <article class="breaker-card" data-testid="breaker" data-breaker=data_breaker
            data-status=move || status().map(|s| format!("{s:?}"))>
            {move || breaker.get().map(|b| {
                let status = b.status;
                let countdown = b.half_open_in_ms.map(|ms| {
                    format!("A probe may go in {} s.", (ms as f64 / 1000.0).ceil() as i64)
                });
                let transitions: Vec<_> = b.transitions.iter().rev().take(8).cloned().collect();
                view! {
                    <header>
                        <h4>{b.name.clone()}</h4>
                        <span class=status_class(status) data-testid="breaker-status">{status.label()}</span>
                    </header>
                    <dl class="summary">
                        <dt>"Failure rate"</dt><dd>{percent(b.failure_rate)} " (trips at " {format!("{:.0} %", b.failure_threshold)} ")"</dd>
                        <dt>"Slow calls"</dt><dd>{percent(b.slow_rate)} " (trips at " {format!("{:.0} %", b.slow_threshold)} ")"</dd>
                        <dt>"Window"</dt><dd>{format!("{} calls of the {}; rates from {} calls", b.calls_in_window, b.window, b.minimum_calls)}</dd>
                        <dt>"Calls"</dt><dd>{format!("{} succeeded, {} failed, {} rejected", b.succeeded, b.failed, b.rejected)}</dd>
                        {countdown.map(|c| view! { <dt>"Half-open"</dt><dd data-testid="half-open-in">{c}</dd> })}
                        {(status == BreakerStatus::HalfOpen).then(|| view! { <dt>"Probes left"</dt><dd>{b.probes_left}</dd> })}
                    </dl>
                    <h5>"Transitions"</h5>
                    {if transitions.is_empty() {
                        view! { <p class="hint">"None yet: closed since start."</p> }.into_any()
                    } else {
                        view! {
                            <ol class="timeline" data-testid="transitions">
                                {transitions.into_iter().map(|t| view! {
                                    <li>
                                        <time>{format_utc(t.at_ms)}</time>" "
                                        <span class=status_class(t.from)>{t.from.label()}</span>" → "
                                        <span class=status_class(t.to)>{t.to.label()}</span>
                                        <div class="hint">{t.cause}</div>
                                    </li>
                                }).collect_view()}
                            </ol>
                        }.into_any()
                    }}
                }
            })}
            {move || (here && can(Role::Operator)).then(|| {
                let name = name.clone();
                view! {
                    <div class="breaker-actions" data-testid="breaker-actions">
                        <label for=input_id.clone()>"Reason (required)"</label>
                        <input id=input_id.clone() type="text" maxlength=MAX_REASON data-testid="breaker-reason"
                            prop:value=move || reason.get()
                            on:input=move |ev| reason.set(event_target_value(&ev)) />
                        <div class="actions">
                            {BreakerAction::ALL.into_iter().map(|action| {
                                let name = name.clone();
                                let class = if action == BreakerAction::ForceOpen { "danger" } else { "secondary" };
                                view! {
                                    <button type="button" class=class data-testid=format!("breaker-{}", action.as_str())
                                        disabled=move || act.pending().get() || reason.with(|r| r.trim().is_empty())
                                        on:click=move |_| {
                                            act.dispatch(ActOnBreaker { name: name.clone(), action, reason: reason.get_untracked() });
                                            reason.set(String::new());
                                        }>{action.label()}</button>
                                }
                            }).collect_view()}
                        </div>
                    </div>
                }
            })}
        </article>
    }
    .into_any()
}

#[component]
fn LimiterRow(l: LimiterView) -> impl IntoView {
    let spark = l.clone();
    view! {
        <tr data-testid="limiter" data-limiter=l.name.clone()>
            <td>{l.name.clone()}</td>
            <td>{format!("{} ({})", l.kind, l.scope)}</td>
            <td>{format!("{:.1}/s", l.rate_per_sec)}</td>
            <td>{format!("{:.0}", l.burst)}</td>
            <td data-testid="limiter-free">{format!("{:.1}", l.available)}</td>
            <td data-testid="limiter-waiters">{l.waiters}</td>
            <td data-testid="limiter-admitted">{l.admitted}</td>
            <td data-testid="limiter-refused">{l.refused}</td>
            <td>{l.store_writes}</td>
            <td><Spark l=spark /></td>
        </tr>
    }
}

/// Admitted (up) and refused (down) per second, the last minute, as bars.
#[component]
fn Spark(l: LimiterView) -> impl IntoView {
    const W: f64 = 180.0;
    const H: f64 = 36.0;
    let n = l.per_second.len().max(1) as f64;
    let peak = l
        .per_second
        .iter()
        .map(|s| s.admitted.max(s.refused))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let bar = W / n;
    let half = H / 2.0;
    let total_admitted: u32 = l.per_second.iter().map(|s| s.admitted).sum();
    let total_refused: u32 = l.per_second.iter().map(|s| s.refused).sum();
    let label = format!(
        "{total_admitted} admitted and {total_refused} refused in the last {} s; peak {peak:.0} per second",
        l.per_second.len()
    );
    let title = label.clone();
    view! {
        <svg class="spark" width=W height=H viewBox=format!("0 0 {W} {H}") role="img" aria-label=label>
            <title>{title}</title>
            <line x1="0" y1=half x2=W y2=half class="spark-axis" />
            {l.per_second.iter().enumerate().map(|(i, s)| {
                let x = i as f64 * bar;
                let up = half * f64::from(s.admitted) / peak;
                let down = half * f64::from(s.refused) / peak;
                view! {
                    <rect x=x y=half - up width=(bar - 0.5).max(0.5) height=up class="spark-admitted" />
                    <rect x=x y=half width=(bar - 0.5).max(0.5) height=down class="spark-refused" />
                }
            }).collect_view()}
        </svg>
    }
}

#[component]
fn SampleControls(
    percent: Signal<Option<u32>>,
    flaky: ServerAction<SetFlakyFailure>,
) -> impl IntoView {
    // What the operator typed; `None` shows the current rate.
    let draft = RwSignal::new(None::<String>);
    let problem = RwSignal::new(None::<String>);
    let shown = move || {
        draft
            .get()
            .unwrap_or_else(|| percent.get().map(|p| p.to_string()).unwrap_or_default())
    };
    view! {
        <section class="card" data-testid="samples">
            <h2>"Samples"</h2>
            <p class="hint">
                "FlakyCalls calls a dependency through the flaky-dependency breaker; LimiterBurst sends a burst through the burst-limiter (5 per second). Start them from "
                <a href="/start">"Start"</a>" (input: the number of calls)."
            </p>
            <p data-testid="flaky-percent">{move || percent.get().map(|p| format!("The flaky dependency fails {p} % of calls."))}</p>
            {move || can(Role::Operator).then(|| view! {
                // The page checks the value itself, with a message, rather than the browser's tooltip.
                <form class="filters-form" novalidate=true on:submit=move |ev| {
                    ev.prevent_default();
                    match flaky_percent(&shown()) {
                        Ok(p) => {
                            problem.set(None);
                            draft.set(None);
                            flaky.dispatch(SetFlakyFailure { percent: p });
                        }
                        Err(e) => problem.set(Some(e)),
                    }
                }>
                    <label>"Failure rate (%) "
                        <input type="number" min="0" max="100" data-testid="flaky-input"
                            prop:value=shown
                            on:input=move |ev| draft.set(Some(event_target_value(&ev))) />
                    </label>
                    <button type="submit" class="secondary" data-testid="flaky-apply"
                        disabled=move || flaky.pending().get()>"Apply"</button>
                </form>
            })}
            {move || problem.get().or_else(|| flaky.value().get().and_then(Result::err).map(|e| e.to_string())).map(|e| view! {
                <p class="error" role="alert" data-testid="flaky-error">{e}</p>
            })}
        </section>
    }
}

/// A failure rate typed by the operator: a whole percentage from 0 to 100.
pub fn flaky_percent(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| {
            format!(
                "a failure rate is a whole percentage from 0 to 100, not {:?}",
                text.trim()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::flaky_percent;

    #[test]
    fn a_failure_rate_is_a_whole_percentage() {
        assert_eq!(flaky_percent(" 40 "), Ok(40));
        assert_eq!(flaky_percent("100"), Ok(100));
        for bad in ["101", "-5", "18446744073709551615", "2.5", "", "abc"] {
            assert!(flaky_percent(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(feature = "ssr")]
pub mod ssr {
    //! Server side of the Resilience page.

    use engine_core::resilience::view::{BreakerAction, BreakerView, ResilienceSnapshot};

    use super::{MAX_REASON, ResilienceOverview};
    use crate::{EngineClient, error::AppError};

    /// Snapshots older than this are not shown: their process is gone or cut off.
    pub const FRESH_MS: i64 = 10_000;

    /// This process's snapshot, then the others published within [`FRESH_MS`].
    pub async fn processes(
        engine: &EngineClient,
        now: i64,
    ) -> Result<Vec<ResilienceSnapshot>, AppError> {
        let local = engine.resilience();
        let mut all = vec![];
        for published in engine.published_resilience(now - FRESH_MS).await? {
            if published.process != local.process {
                all.push(published);
            }
        }
        all.insert(0, local);
        Ok(all)
    }

    pub async fn state(engine: &EngineClient, now: i64) -> Result<ResilienceOverview, AppError> {
        Ok(ResilienceOverview {
            processes: processes(engine, now).await?,
            flaky_failure_percent: engine::samples::flaky_failure_percent(),
        })
    }

    pub async fn act(
        engine: &EngineClient,
        name: &str,
        action: BreakerAction,
        reason: &str,
    ) -> Result<BreakerView, AppError> {
        if reason.trim().is_empty() {
            return Err(AppError::Validation(
                "give a reason: it is recorded on the breaker's transition and in the audit log"
                    .into(),
            ));
        }
        if reason.len() > MAX_REASON {
            return Err(AppError::Validation(format!(
                "the reason is {} bytes; the limit is {MAX_REASON}",
                reason.len()
            )));
        }
        Ok(engine.act_on_breaker(name, action, reason)?)
    }

    pub async fn set_flaky(percent: u32) -> Result<u32, AppError> {
        if percent > 100 {
            return Err(AppError::Validation(format!(
                "a failure rate is a percentage from 0 to 100, not {percent}"
            )));
        }
        engine::samples::set_flaky_failure_percent(percent);
        Ok(percent)
    }
}
