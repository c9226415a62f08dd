//! A small SVG line chart read at a glance: a time axis with clock labels, a value axis with
//! "nice" ticks and its unit, one line per series with a legend, and the values of the bucket
//! under the pointer (or picked with the arrow keys) written out below. No chart crate fits
//! Leptos 0.8 without a plotting stack; the scale and tick logic here is plain functions with
//! unit tests, and the component only lays them out.

use leptos::prelude::*;

/// One line of the chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub label: String,
    /// One value per bucket; `None` leaves a gap.
    pub values: Vec<Option<f64>>,
    /// CSS class that colours the line (`series-0`…`series-5`, `series-failed`, …).
    pub class: String,
}

/// A value axis from 0: its top and the tick values, evenly spaced by a 1, 2 or 5 × 10ⁿ step.
#[derive(Debug, Clone, PartialEq)]
pub struct Scale {
    pub max: f64,
    pub step: f64,
    pub ticks: Vec<f64>,
}

/// The scale from 0 that holds `max` with at most `max_ticks` intervals of a round step. An
/// empty or all-zero chart gets the scale 0–1.
pub fn nice_scale(max: f64, max_ticks: usize) -> Scale {
    let max_ticks = max_ticks.max(1) as f64;
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let rough = max / max_ticks;
    let magnitude = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|step| step * max_ticks >= max - 1e-9 * max)
        .unwrap_or(10.0 * magnitude);
    let intervals = (max / step - 1e-9).ceil().max(1.0) as usize;
    Scale {
        max: step * intervals as f64,
        step,
        ticks: (0..=intervals).map(|i| step * i as f64).collect(),
    }
}

/// A tick's label: as many decimals as the step needs, none for whole steps.
pub fn tick_label(value: f64, step: f64) -> String {
    if value == 0.0 {
        return "0".to_owned();
    }
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    format!("{value:.decimals$}")
}

/// A value with its unit for the readout: three significant figures at most.
pub fn value_label(value: f64, unit: &str) -> String {
    let text = if value == 0.0 || value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    };
    if unit.starts_with('/') {
        format!("{text}{unit}")
    } else {
        format!("{text} {unit}")
    }
}

/// `HH:MM` (UTC) of a time in ms since the epoch, `HH:MM:SS` when `seconds`.
pub fn clock(ms: i64, seconds: bool) -> String {
    let s = ms.div_euclid(1000).rem_euclid(86_400);
    if seconds {
        format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 3600, s % 3600 / 60)
    }
}

/// The time axis' ticks: the bucket position (fractional) and clock label of each whole
/// `every_ms` in the window of `buckets` buckets of `bucket_ms` starting at `start_ms`.
pub fn time_ticks(
    start_ms: i64,
    bucket_ms: i64,
    buckets: usize,
    every_ms: i64,
) -> Vec<(f64, String)> {
    if bucket_ms <= 0 || every_ms <= 0 || buckets == 0 {
        return Vec::new();
    }
    // Bucket i is drawn at its middle: x(i) = i; its time is start + (i + ½)·bucket.
    let first_time = start_ms + bucket_ms / 2;
    let last_time = first_time + (buckets as i64 - 1) * bucket_ms;
    let mut tick = first_time.div_euclid(every_ms) * every_ms;
    if tick < first_time {
        tick += every_ms;
    }
    let mut ticks = Vec::new();
    while tick <= last_time {
        let position = (tick - first_time) as f64 / bucket_ms as f64;
        ticks.push((position, clock(tick, false)));
        tick += every_ms;
    }
    ticks
}

/// The SVG `points` of each unbroken run of `values` (x per bucket index, y scaled so `max` is
/// at the top), already placed in the plot area.
pub fn polylines(values: &[Option<f64>], max: f64, area: &Area) -> Vec<String> {
    let mut runs = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for (i, value) in values.iter().enumerate() {
        match value {
            Some(v) => {
                let (x, y) = (area.x(i as f64, values.len()), area.y(*v, max));
                current.push(format!("{x:.1},{y:.1}"));
            }
            None if !current.is_empty() => runs.push(std::mem::take(&mut current).join(" ")),
            None => {}
        }
    }
    if !current.is_empty() {
        runs.push(current.join(" "));
    }
    runs
}

/// Where the plot sits inside the SVG's view box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Area {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

impl Area {
    /// The x of (fractional) bucket `i` of `n`; buckets are spread over the whole width.
    pub fn x(&self, i: f64, n: usize) -> f64 {
        if n > 1 {
            self.left + self.width * i / (n - 1) as f64
        } else {
            self.left + self.width / 2.0
        }
    }

    /// The y of `value` on a scale whose top is `max`.
    pub fn y(&self, value: f64, max: f64) -> f64 {
        let max = if max > 0.0 { max } else { 1.0 };
        self.top + self.height - (value / max).clamp(0.0, 1.0) * self.height
    }
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 220.0;
const AREA: Area = Area {
    left: 52.0,
    top: 10.0,
    width: WIDTH - 52.0 - 12.0,
    height: HEIGHT - 10.0 - 28.0,
};

/// A line chart over `buckets` time buckets of `bucket_ms` from `start_ms`, with axes, legend
/// and a readout of the bucket under the pointer (`hover` outlives re-renders of the chart, so a
/// pushed update does not lose the reader's place).
#[component]
pub fn LineChart(
    title: &'static str,
    /// Unit of the values (`/s`, `ms`).
    unit: &'static str,
    lines: Vec<Line>,
    start_ms: i64,
    bucket_ms: i64,
    hover: RwSignal<Option<usize>>,
    #[prop(into)] testid: String,
) -> impl IntoView {
    let buckets = lines.iter().map(|l| l.values.len()).max().unwrap_or(0);
    let max = lines
        .iter()
        .flat_map(|l| l.values.iter().flatten())
        .fold(0.0f64, |a, b| a.max(*b));
    let scale = nice_scale(max, 4);
    let y_axis = scale
        .ticks
        .iter()
        .map(|t| {
            let y = AREA.y(*t, scale.max);
            view! {
                <line class="grid" x1=AREA.left x2=AREA.left + AREA.width y1=y y2=y />
                <text class="tick" x=AREA.left - 6.0 y=y + 4.0 text-anchor="end">{tick_label(*t, scale.step)}</text>
            }
        })
        .collect_view();
    let x_axis = time_ticks(start_ms, bucket_ms, buckets, 60_000)
        .into_iter()
        .map(|(position, label)| {
            let x = AREA.x(position, buckets);
            let bottom = AREA.top + AREA.height;
            view! {
                <line class="axis" x1=x x2=x y1=bottom y2=bottom + 4.0 />
                <text class="tick" x=x y=bottom + 17.0 text-anchor="middle">{label}</text>
            }
        })
        .collect_view();
    let paths = lines
        .iter()
        .flat_map(|l| {
            polylines(&l.values, scale.max, &AREA)
                .into_iter()
                .map(|points| match points.split_once(',') {
                    // A lone value has no line to draw: mark it with a dot.
                    Some((x, y)) if !points.contains(' ') => view! {
                        <circle class=format!("dot {}", l.class) cx=x.to_owned() cy=y.to_owned() r="3" />
                    }
                    .into_any(),
                    _ => view! { <polyline class=format!("line {}", l.class) points=points /> }.into_any(),
                })
                .collect::<Vec<_>>()
        })
        .collect_view();
    // One invisible column per bucket catches the pointer.
    let column = if buckets > 1 {
        AREA.width / (buckets - 1) as f64
    } else {
        AREA.width
    };
    let targets = (0..buckets)
        .map(|i| {
            let x = AREA.x(i as f64, buckets) - column / 2.0;
            view! {
                <rect class="hover-target" x=x y=AREA.top width=column height=AREA.height
                    on:mouseenter=move |_| hover.set(Some(i)) />
            }
        })
        .collect_view();
    let guide = move || {
        hover.get().filter(|i| *i < buckets).map(|i| {
            let x = AREA.x(i as f64, buckets);
            view! { <line class="guide" x1=x x2=x y1=AREA.top y2=AREA.top + AREA.height /> }
        })
    };
    let legend = lines
        .iter()
        .map(|l| {
            view! { <li><span class=format!("swatch {}", l.class) aria-hidden="true"></span>{l.label.clone()}</li> }
        })
        .collect_view();
    let readout_lines = lines.clone();
    // The hovered bucket, else the latest one with a value.
    let readout = move || {
        let latest = (0..buckets).rev().find(|i| {
            readout_lines
                .iter()
                .any(|l| l.values.get(*i).copied().flatten().is_some())
        });
        let i = hover.get().filter(|i| *i < buckets).or(latest)?;
        let time = clock(start_ms + i as i64 * bucket_ms, true);
        let values = readout_lines
            .iter()
            .map(|l| {
                let value = l.values.get(i).copied().flatten();
                format!(
                    "{}: {}",
                    l.label,
                    value.map_or_else(|| "–".to_owned(), |v| value_label(v, unit))
                )
            })
            .collect::<Vec<_>>()
            .join(" · ");
        Some(format!("{time} UTC — {values}"))
    };
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        let last = buckets.saturating_sub(1);
        let current = hover.get_untracked().unwrap_or(last);
        let next = match ev.key().as_str() {
            "ArrowLeft" => current.saturating_sub(1),
            "ArrowRight" => (current + 1).min(last),
            "Home" => 0,
            "End" => last,
            _ => return,
        };
        ev.prevent_default();
        hover.set(Some(next));
    };
    view! {
        <figure class="chart" data-testid=testid data-max=format!("{}", scale.max)>
            <figcaption>{title} <span class="scale">" (" {unit} ", times in UTC)"</span></figcaption>
            <svg
                viewBox=format!("0 0 {WIDTH} {HEIGHT}")
                role="img"
                aria-label=format!("{title}; use the arrow keys to read values")
                tabindex="0"
                on:keydown=on_key
                on:mouseleave=move |_| hover.set(None)
            >
                {y_axis}
                <line class="axis" x1=AREA.left x2=AREA.left + AREA.width y1=AREA.top + AREA.height y2=AREA.top + AREA.height />
                {x_axis}
                {paths}
                {guide}
                {targets}
            </svg>
            <p class="chart-readout" aria-live="polite" data-testid="chart-readout">{readout}</p>
            <ul class="legend">{legend}</ul>
        </figure>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_use_round_steps_and_hold_the_maximum() {
        assert_eq!(
            nice_scale(7.3, 4),
            Scale {
                max: 8.0,
                step: 2.0,
                ticks: vec![0.0, 2.0, 4.0, 6.0, 8.0]
            }
        );
        assert_eq!(nice_scale(100.0, 4).ticks, vec![0.0, 50.0, 100.0]);
        assert_eq!(nice_scale(101.0, 4).max, 150.0);
        let small = nice_scale(0.034, 4);
        assert!((small.step - 0.01).abs() < 1e-12 && (small.max - 0.04).abs() < 1e-12);
        assert_eq!(nice_scale(2_400.0, 5).step, 500.0);
        // Nothing to show: a unit scale, never a division by zero.
        assert_eq!(nice_scale(0.0, 4).max, 1.0);
        assert_eq!(nice_scale(f64::NAN, 4).max, 1.0);
        for max in [0.7, 3.0, 9.99, 12.5, 999.0, 1e6 + 1.0] {
            let s = nice_scale(max, 4);
            assert!(s.max >= max && s.ticks.len() <= 5, "{max}: {s:?}");
        }
    }

    #[test]
    fn tick_and_value_labels_carry_the_decimals_they_need() {
        assert_eq!(tick_label(4.0, 2.0), "4");
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(tick_label(0.2, 0.1), "0.2");
        assert_eq!(tick_label(0.0, 0.05), "0");
        assert_eq!(value_label(3.456, "/s"), "3.46/s");
        assert_eq!(value_label(12.34, "ms"), "12.3 ms");
        assert_eq!(value_label(1234.6, "ms"), "1235 ms");
        assert_eq!(value_label(0.0, "/s"), "0/s");
    }

    #[test]
    fn time_ticks_fall_on_whole_minutes_inside_the_window() {
        // 60 buckets of 5 s from 12:00:00: bucket middles run 12:00:02.5 … 12:04:57.5.
        let noon = 12 * 3_600_000;
        let ticks = time_ticks(noon, 5_000, 60, 60_000);
        let labels: Vec<&str> = ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["12:01", "12:02", "12:03", "12:04"]);
        assert!((ticks[0].0 - 11.5).abs() < 1e-9);
        assert!(time_ticks(noon, 0, 60, 60_000).is_empty());
        assert_eq!(clock(noon + 61_000, true), "12:01:01");
        assert_eq!(clock(-1_000, true), "23:59:59");
    }

    #[test]
    fn values_scale_into_the_area_and_gaps_split_the_line() {
        let area = Area {
            left: 0.0,
            top: 0.0,
            width: 40.0,
            height: 100.0,
        };
        let runs = polylines(
            &[Some(0.0), Some(5.0), None, Some(10.0), Some(10.0)],
            10.0,
            &area,
        );
        assert_eq!(runs, vec!["0.0,100.0 10.0,50.0", "30.0,0.0 40.0,0.0"]);
        assert!(polylines(&[None, None], 0.0, &area).is_empty());
        // An all-zero series stays on the axis.
        assert_eq!(
            polylines(&[Some(0.0), Some(0.0)], 0.0, &area),
            vec!["0.0,100.0 40.0,100.0"]
        );
    }
}
