//! `GET /api/v1/export/instances?format=csv|json&<the list's filters>`: every instance the
//! filter matches, streamed page by page (1,000 rows a query) so memory stays flat, up to
//! [`MAX_ROWS`].
//!
//! Columns: id, orchestration, status, created and last change (UTC, RFC 3339), completed (when
//! ended) and the run's duration in milliseconds (when ended). CSV follows RFC 4180, and a cell
//! that a spreadsheet would read as a formula (`=`, `+`, `-`, `@`, tab, carriage return first)
//! gets a leading `'`. JSON is `{"instances": […], "truncated": bool}`. A CSV body has no
//! trailer, so a CSV export that reached the limit simply has [`MAX_ROWS`] rows (the page says
//! so); the filter narrows it.
//! Viewers may export (it reads only); the filter is checked before anything streams (400).

use std::collections::VecDeque;

use futures_util::StreamExt;

use app::{models::format_utc, routes::instances::InstanceFilter};
use axum::{
    body::{Body, Bytes},
    extract::{Query, State},
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use engine::store::{InstanceQuery, InstanceRecord};
use serde::Deserialize;

use crate::{
    AppState,
    api::{ApiError, ApiResult},
};

/// Most rows one export returns.
pub const MAX_ROWS: usize = 100_000;
/// Rows per store query.
const PAGE: u32 = 1_000;

/// The export format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Csv,
    Json,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    #[serde(default)]
    #[param(inline)]
    format: Format,
    status: Option<String>,
    name: Option<String>,
    id: Option<String>,
    from: Option<String>,
    to: Option<String>,
    tag: Option<String>,
    sort: Option<String>,
    order: Option<String>,
}

const COLUMNS: [&str; 7] = [
    "instance_id",
    "name",
    "status",
    "created_at",
    "updated_at",
    "completed_at",
    "duration_ms",
];

/// Exports every instance the filter matches, as CSV or JSON (streamed).
#[utoipa::path(get, path = "/api/v1/export/instances", tag = "instances",
    params(ExportParams),
    responses(
        (status = 200, description = "The rows, streamed", content(
            (String = "text/csv"),
            (serde_json::Value = "application/json"),
        )),
        (status = 400, description = "Invalid filter", body = crate::api::ErrorBody),
        (status = 401, description = "No session or token"),
    ))]
pub async fn instances(
    State(state): State<AppState>,
    query: Result<Query<ExportParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(p) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    let engine = state
        .engine
        .clone()
        .ok_or_else(|| ApiError::from(app::error::AppError::Unavailable))?;
    let filter = InstanceFilter {
        status: p.status,
        name: p.name,
        id_prefix: p.id,
        from: p.from,
        to: p.to,
        tag: p.tag,
        sort: p.sort,
        order: p.order,
        cursor: None,
    };
    let mut query = app::routes::instances::ssr::query(filter)?;
    query.page_size = PAGE;
    let format = p.format;
    let (content_type, file) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "instances.csv"),
        Format::Json => ("application/json", "instances.json"),
    };
    let stream = futures_util::stream::unfold(
        Export {
            engine,
            query,
            format,
            sent: 0,
            state: Step::Start,
            pending: VecDeque::new(),
        },
        Export::next,
    )
    // The compression layer may poll again after the end; a fused stream answers `None` again
    // (a bare `unfold` panics).
    .fuse();
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&format!("attachment; filename=\"{file}\""))
                    .unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Start,
    Rows,
    End,
    Done,
}

/// The streaming state: the query (its cursor moves page by page) and what is left to send.
struct Export {
    engine: app::EngineClient,
    query: InstanceQuery,
    format: Format,
    sent: usize,
    state: Step,
    pending: VecDeque<InstanceRecord>,
}

impl Export {
    /// The next chunk of the body: the header, a page of rows, the trailer.
    async fn next(mut self) -> Option<(Result<Bytes, std::io::Error>, Export)> {
        match self.state {
            Step::Start => {
                self.state = Step::Rows;
                let head = match self.format {
                    Format::Csv => format!("{}\r\n", COLUMNS.join(",")),
                    Format::Json => "{\"instances\":[".to_owned(),
                };
                Some((Ok(Bytes::from(head)), self))
            }
            Step::Rows => {
                if self.pending.is_empty() {
                    if self.sent >= MAX_ROWS || (self.sent > 0 && self.query.cursor.is_none()) {
                        self.state = Step::End;
                        return Box::pin(self.next()).await;
                    }
                    let page = match self.engine.query(&self.query).await {
                        Ok(page) => page,
                        Err(e) => {
                            tracing::warn!(error = %e, "export: a page failed; the body ends early");
                            self.state = Step::Done;
                            return Some((Err(std::io::Error::other(e.to_string())), self));
                        }
                    };
                    self.pending = page.instances.into();
                    self.query.cursor = page.next_cursor;
                    if self.pending.is_empty() {
                        self.state = Step::End;
                        return Box::pin(self.next()).await;
                    }
                }
                let room = MAX_ROWS - self.sent;
                let take = self.pending.len().min(room);
                let mut chunk = String::new();
                for record in self.pending.drain(..take) {
                    match self.format {
                        Format::Csv => csv_row(&mut chunk, &record),
                        Format::Json => {
                            if self.sent > 0 {
                                chunk.push(',');
                            }
                            chunk.push_str(&json_row(&record).to_string());
                        }
                    }
                    self.sent += 1;
                }
                if self.sent >= MAX_ROWS {
                    self.pending.clear();
                }
                Some((Ok(Bytes::from(chunk)), self))
            }
            Step::End => {
                self.state = Step::Done;
                let truncated = self.sent >= MAX_ROWS && self.query.cursor.is_some();
                match self.format {
                    Format::Csv => None,
                    Format::Json => Some((
                        Ok(Bytes::from(format!("],\"truncated\":{truncated}}}"))),
                        self,
                    )),
                }
            }
            Step::Done => None,
        }
    }
}

/// RFC 3339 UTC from milliseconds.
fn utc(ms: i64) -> String {
    // `format_utc` gives `YYYY-MM-DD HH:MM:SS`; exports use the ISO form.
    format!("{}Z", format_utc(ms).replacen(' ', "T", 1))
}

fn cells(record: &InstanceRecord) -> [String; 7] {
    let duration = record.completed_at.map(|end| end - record.created_at);
    [
        record.instance_id.clone(),
        record.name.clone(),
        record.status.to_string(),
        utc(record.created_at),
        utc(record.updated_at),
        record.completed_at.map(utc).unwrap_or_default(),
        duration.map(|d| d.to_string()).unwrap_or_default(),
    ]
}

fn csv_row(out: &mut String, record: &InstanceRecord) {
    let cells = cells(record);
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_cell(out, cell);
    }
    out.push_str("\r\n");
}

/// One CSV cell: quoted when it holds a separator, a quote or a line break (quotes doubled), and
/// defused when a spreadsheet would run it as a formula.
fn csv_cell(out: &mut String, cell: &str) {
    let formula = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let text = if formula {
        format!("'{cell}")
    } else {
        cell.to_owned()
    };
    if text.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&text);
    }
}

fn json_row(record: &InstanceRecord) -> serde_json::Value {
    let [id, name, status, created, updated, completed, _] = cells(record);
    serde_json::json!({
        "instance_id": id,
        "name": name,
        "status": status,
        "created_at": created,
        "updated_at": updated,
        "completed_at": record.completed_at.map(|_| completed),
        "duration_ms": record.completed_at.map(|end| end - record.created_at),
    })
}

#[cfg(test)]
mod tests {
    use super::csv_cell;

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        for (cell, expected) in [
            ("plain", "plain"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("two\nlines", "\"two\nlines\""),
            ("=HYPERLINK(\"x\")", "\"'=HYPERLINK(\"\"x\"\")\""),
            ("-1", "'-1"),
            ("@sum", "'@sum"),
        ] {
            let mut out = String::new();
            csv_cell(&mut out, cell);
            assert_eq!(out, expected, "{cell}");
        }
    }
}
