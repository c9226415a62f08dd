//! `switchyard ctl …`: a small command-line client of the JSON API for operators' scripts.
//!
//! ```text
//! switchyard ctl list [--status S] [--name N] [--id PREFIX] [--json]
//! switchyard ctl show ID
//! switchyard ctl start NAME [--input JSON] [--id ID]
//! switchyard ctl raise ID EVENT [--payload JSON] --reason R
//! switchyard ctl terminate ID --reason R
//! switchyard ctl purge ID --reason R
//! ```
//!
//! The server is `--url` or `SWITCHYARD_URL` (default `http://127.0.0.1:3000`); the API token is
//! read from `SWITCHYARD_TOKEN` only (never a flag, so it stays out of shell history and process
//! lists) and sent as `Authorization: Bearer …`; without one the request goes unauthenticated,
//! which a local-mode server accepts. Output is for people (`list` prints one line per instance)
//! or, with `--json` and for `show`, the API's JSON. A refusal prints the API's message and exits
//! 1; a usage error exits 2.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

/// The command line after `switchyard ctl`.
#[derive(Debug, Parser)]
#[command(
    name = "switchyard ctl",
    about = "Manage instances through a Switchyard server's JSON API"
)]
pub struct Ctl {
    /// The server's address.
    #[arg(long, env = "SWITCHYARD_URL", default_value = "http://127.0.0.1:3000")]
    url: String,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    /// Lists instances (newest first, one page of up to 100).
    List(ListArgs),
    /// Shows one instance with its history, as JSON.
    Show { id: String },
    /// Starts an orchestration and prints the new instance's id.
    Start {
        name: String,
        /// The input, as JSON.
        #[arg(long, default_value = "null")]
        input: String,
        /// The instance id (default: one is generated).
        #[arg(long)]
        id: Option<String>,
    },
    /// Raises an event on an instance.
    Raise {
        id: String,
        event: String,
        /// The event's payload, as JSON.
        #[arg(long, default_value = "null")]
        payload: String,
        #[arg(long)]
        reason: String,
    },
    /// Terminates an instance.
    Terminate {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Purges an instance and everything it owns (admin).
    Purge {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Args)]
struct ListArgs {
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    name: Option<String>,
    /// Instance id prefix.
    #[arg(long)]
    id: Option<String>,
    /// Print the API's JSON instead of lines.
    #[arg(long)]
    json: bool,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0} is not JSON: {1}")]
    BadJson(&'static str, serde_json::Error),
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the server answered {status}: {message}")]
    Refused {
        status: reqwest::StatusCode,
        message: String,
    },
}

/// A request to the API: method, path under the server, optional JSON body.
struct Call {
    method: reqwest::Method,
    path: String,
    body: Option<Value>,
}

impl Ctl {
    /// Runs the command; what it prints on success is returned.
    pub async fn run(self) -> Result<String, CtlError> {
        let base = self.url.trim_end_matches('/').to_owned();
        let (call, json_out) = self.verb.call()?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|source| CtlError::Unreachable {
                url: base.clone(),
                source,
            })?;
        let url = format!("{base}{}", call.path);
        let mut request = client.request(call.method, &url);
        if let Ok(token) = std::env::var("SWITCHYARD_TOKEN")
            && !token.is_empty()
        {
            request = request.bearer_auth(token);
        }
        if let Some(body) = call.body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|source| CtlError::Unreachable {
                url: base.clone(),
                source,
            })?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|source| CtlError::Unreachable {
                url: base.clone(),
                source,
            })?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let message = value["message"]
                .as_str()
                .or(value.as_str())
                .unwrap_or("no message")
                .to_owned();
            return Err(CtlError::Refused { status, message });
        }
        Ok(match json_out {
            Output::Json => serde_json::to_string_pretty(&value).unwrap_or_default(),
            Output::Lines => lines(&value),
            Output::Field(field) => value[field].as_str().unwrap_or_default().to_owned(),
            Output::Done(what) => what,
        })
    }
}

/// How a verb prints the answer.
enum Output {
    Json,
    /// The instance list, a line each.
    Lines,
    /// One string field of the answer.
    Field(&'static str),
    /// A fixed confirmation.
    Done(String),
}

impl Verb {
    fn call(self) -> Result<(Call, Output), CtlError> {
        use reqwest::Method;
        let post = |path: String, body: Value| Call {
            method: Method::POST,
            path,
            body: Some(body),
        };
        Ok(match self {
            Verb::List(args) => {
                let mut query = Vec::new();
                for (key, value) in [
                    ("status", args.status),
                    ("name", args.name),
                    ("id", args.id),
                ] {
                    if let Some(value) = value {
                        query.push(format!("{key}={}", encode(&value)));
                    }
                }
                let path = if query.is_empty() {
                    "/api/v1/instances".to_owned()
                } else {
                    format!("/api/v1/instances?{}", query.join("&"))
                };
                let call = Call {
                    method: Method::GET,
                    path,
                    body: None,
                };
                (
                    call,
                    if args.json {
                        Output::Json
                    } else {
                        Output::Lines
                    },
                )
            }
            Verb::Show { id } => (
                Call {
                    method: Method::GET,
                    path: format!("/api/v1/instances/{}", encode(&id)),
                    body: None,
                },
                Output::Json,
            ),
            Verb::Start { name, input, id } => {
                let input = parse("--input", &input)?;
                let mut body = json!({ "name": name, "input": input });
                if let Some(id) = id {
                    body["instance_id"] = json!(id);
                }
                (
                    post("/api/v1/instances".to_owned(), body),
                    Output::Field("instance_id"),
                )
            }
            Verb::Raise {
                id,
                event,
                payload,
                reason,
            } => {
                let payload = parse("--payload", &payload)?;
                let done = format!("raised {event} on {id}");
                (
                    post(
                        format!(
                            "/api/v1/instances/{}/events/{}",
                            encode(&id),
                            encode(&event)
                        ),
                        json!({ "payload": payload, "reason": reason }),
                    ),
                    Output::Done(done),
                )
            }
            Verb::Terminate { id, reason } => act("terminate", "terminated", &id, reason),
            Verb::Purge { id, reason } => act("purge", "purged", &id, reason),
        })
    }
}

/// An instance action with a reason: `POST /api/v1/instances/{id}/{action}`.
fn act(action: &str, done: &str, id: &str, reason: String) -> (Call, Output) {
    let call = Call {
        method: reqwest::Method::POST,
        path: format!("/api/v1/instances/{}/{action}", encode(id)),
        body: Some(json!({ "reason": reason })),
    };
    (call, Output::Done(format!("{done} {id}")))
}

fn parse(what: &'static str, text: &str) -> Result<Value, CtlError> {
    serde_json::from_str(text).map_err(|e| CtlError::BadJson(what, e))
}

/// `text` as one URL path segment or query value.
fn encode(text: &str) -> String {
    app::models::url_component(text)
}

/// The instance list as aligned lines: id, status, name, created (UTC).
fn lines(list: &Value) -> String {
    let rows: Vec<[String; 4]> = list["instances"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    [
                        r["instance_id"].as_str().unwrap_or_default().to_owned(),
                        r["status"].as_str().unwrap_or_default().to_owned(),
                        r["name"].as_str().unwrap_or_default().to_owned(),
                        app::models::format_utc(r["created_at"].as_i64().unwrap_or_default()),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    let header = ["ID", "STATUS", "NAME", "CREATED (UTC)"].map(str::to_owned);
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            std::iter::once(&header)
                .chain(&rows)
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if list["next_cursor"].is_string() {
        out.push_str("(more: narrow the filter)\n");
    }
    out.trim_end().to_owned()
}
