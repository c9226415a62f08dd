//! Keyboard shortcuts for the common moves, and the help overlay that lists them (`?`).
//!
//! Keys typed into a field are the field's own; with Ctrl, Alt or Meta held they belong to the
//! browser. What a key does is decided by [`interpret`], a plain function with unit tests; the
//! component only listens and acts.

use leptos::prelude::*;

/// The shortcuts, as the help overlay lists them.
pub const SHORTCUTS: &[(&str, &str)] = &[
    ("/", "Focus the page's filter"),
    ("g then o", "Go to the overview"),
    ("g then i", "Go to instances"),
    ("g then a", "Go to approvals"),
    ("g then r", "Go to runaways"),
    ("g then e", "Go to entities"),
    ("g then s", "Go to resilience"),
    ("?", "Show or hide this list"),
    ("Esc", "Close this list"),
];

/// What a key press asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// Focus the page's filter (the element marked `data-shortcut="filter"`).
    Filter,
    /// Navigate to this path.
    Go(&'static str),
    /// Wait for the second key of a `g` sequence.
    Prefix,
    ToggleHelp,
    CloseHelp,
}

/// What `key` does when `after_g` says the previous key was a lone `g`.
pub fn interpret(after_g: bool, key: &str) -> Option<Move> {
    if after_g {
        return match key {
            "o" => Some(Move::Go("/")),
            "i" => Some(Move::Go("/instances")),
            "a" => Some(Move::Go("/approvals")),
            "r" => Some(Move::Go("/runaways")),
            "e" => Some(Move::Go("/entities")),
            "s" => Some(Move::Go("/resilience")),
            _ => None,
        };
    }
    match key {
        "/" => Some(Move::Filter),
        "g" => Some(Move::Prefix),
        "?" => Some(Move::ToggleHelp),
        "Escape" => Some(Move::CloseHelp),
        _ => None,
    }
}

/// Listens for the shortcuts on the whole page and shows the help overlay when asked.
#[component]
pub fn Shortcuts() -> impl IntoView {
    let open = RwSignal::new(false);
    let after_g = StoredValue::new(false);
    let navigate = leptos_router::hooks::use_navigate();
    let handle = window_event_listener(leptos::ev::keydown, move |ev| {
        if ev.ctrl_key() || ev.alt_key() || ev.meta_key() || ev.default_prevented() {
            return;
        }
        let key = ev.key();
        if key != "Escape" && typing_in_a_field(&ev) {
            return;
        }
        let Some(step) = interpret(after_g.get_value(), &key) else {
            after_g.set_value(false);
            return;
        };
        after_g.set_value(step == Move::Prefix);
        match step {
            Move::Prefix => {}
            Move::Filter => {
                if let Some(field) = document()
                    .query_selector("[data-shortcut='filter']")
                    .ok()
                    .flatten()
                {
                    ev.prevent_default();
                    if let Ok(field) = leptos::wasm_bindgen::JsCast::dyn_into::<
                        leptos::web_sys::HtmlElement,
                    >(field)
                    {
                        let _ = field.focus();
                    }
                }
            }
            Move::Go(path) => {
                ev.prevent_default();
                open.set(false);
                navigate(path, Default::default());
            }
            Move::ToggleHelp => {
                ev.prevent_default();
                open.update(|o| *o = !*o);
            }
            Move::CloseHelp => open.set(false),
        }
    });
    on_cleanup(move || handle.remove());
    let rows = SHORTCUTS
        .iter()
        .map(|(keys, what)| view! { <tr><td><kbd>{*keys}</kbd></td><td>{*what}</td></tr> })
        .collect_view();
    view! {
        <div class="help-overlay" role="dialog" aria-modal="true" aria-labelledby="shortcut-help-title"
            data-testid="shortcut-help" hidden=move || !open.get()>
            <div class="card help-card">
                <h2 id="shortcut-help-title">"Keyboard shortcuts"</h2>
                <table class="shortcuts"><tbody>{rows}</tbody></table>
                <button type="button" class="secondary" on:click=move |_| open.set(false)>"Close"</button>
            </div>
        </div>
        <button type="button" class="shortcut-hint" data-testid="shortcut-hint"
            aria-label="Keyboard shortcuts" title="Keyboard shortcuts (?)"
            on:click=move |_| open.update(|o| *o = !*o)>"?"</button>
    }
}

/// Whether the key went to a text field, a select or an editable element.
fn typing_in_a_field(ev: &leptos::ev::KeyboardEvent) -> bool {
    use leptos::wasm_bindgen::JsCast;
    ev.target()
        .and_then(|t| t.dyn_into::<leptos::web_sys::HtmlElement>().ok())
        .is_some_and(|el| {
            matches!(el.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT")
                || el.is_content_editable()
        })
}

#[cfg(test)]
mod tests {
    use super::{Move, interpret};

    #[test]
    fn keys_map_to_moves_and_g_starts_a_sequence() {
        assert_eq!(interpret(false, "/"), Some(Move::Filter));
        assert_eq!(interpret(false, "?"), Some(Move::ToggleHelp));
        assert_eq!(interpret(false, "Escape"), Some(Move::CloseHelp));
        assert_eq!(interpret(false, "g"), Some(Move::Prefix));
        assert_eq!(interpret(true, "i"), Some(Move::Go("/instances")));
        assert_eq!(interpret(true, "a"), Some(Move::Go("/approvals")));
        // A letter alone does nothing, and neither does an unknown second key.
        assert_eq!(interpret(false, "i"), None);
        assert_eq!(interpret(true, "x"), None);
        assert_eq!(interpret(true, "/"), None);
    }
}
