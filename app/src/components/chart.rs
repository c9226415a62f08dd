//! A small SVG line chart: a few series over the same evenly spaced buckets, scaled to the
//! largest value, with a legend and the scale written out. No chart crate fits Leptos 0.8 without
//! pulling in a plotting stack, and this is all the overview needs.

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

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 160.0;

/// The SVG `points` of each unbroken run of `values`, scaled so `max` touches the top.
pub fn polylines(values: &[Option<f64>], max: f64, width: f64, height: f64) -> Vec<String> {
    let step = if values.len() > 1 {
        width / (values.len() - 1) as f64
    } else {
        0.0
    };
    let max = if max > 0.0 { max } else { 1.0 };
    let mut runs = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for (i, value) in values.iter().enumerate() {
        match value {
            Some(v) => {
                let x = step * i as f64;
                let y = height - (v / max).clamp(0.0, 1.0) * height;
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

/// A line chart with a title, a legend and the top of its scale.
#[component]
pub fn LineChart(
    title: &'static str,
    /// Unit of the values, shown with the scale (`/s`, `ms`).
    unit: &'static str,
    lines: Vec<Line>,
    #[prop(into)] testid: String,
) -> impl IntoView {
    let max = lines
        .iter()
        .flat_map(|l| l.values.iter().flatten())
        .fold(0.0f64, |a, b| a.max(*b));
    let scale = if max >= 10.0 {
        format!("{max:.0} {unit}")
    } else {
        format!("{max:.2} {unit}")
    };
    let legend = lines
        .iter()
        .map(|l| {
            view! { <li><span class=format!("swatch {}", l.class) aria-hidden="true"></span>{l.label.clone()}</li> }
        })
        .collect_view();
    let paths = lines
        .iter()
        .flat_map(|l| {
            polylines(&l.values, max, WIDTH, HEIGHT)
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
    view! {
        <figure class="chart" data-testid=testid data-max=format!("{max}")>
            <figcaption>{title} <span class="scale">" · top of scale: " {scale}</span></figcaption>
            <svg viewBox=format!("0 0 {WIDTH} {HEIGHT}") preserveAspectRatio="none" role="img" aria-label=title>
                <line class="axis" x1="0" y1=HEIGHT x2=WIDTH y2=HEIGHT />
                {paths}
            </svg>
            <ul class="legend">{legend}</ul>
        </figure>
    }
}

#[cfg(test)]
mod tests {
    use super::polylines;

    #[test]
    fn values_scale_to_the_box_and_gaps_split_the_line() {
        let runs = polylines(
            &[Some(0.0), Some(5.0), None, Some(10.0), Some(10.0)],
            10.0,
            40.0,
            100.0,
        );
        assert_eq!(runs, vec!["0.0,100.0 10.0,50.0", "30.0,0.0 40.0,0.0"]);
    }

    #[test]
    fn an_all_zero_series_stays_on_the_axis() {
        assert_eq!(
            polylines(&[Some(0.0), Some(0.0)], 0.0, 10.0, 20.0),
            vec!["0.0,20.0 10.0,20.0"]
        );
        assert!(polylines(&[None, None], 0.0, 10.0, 20.0).is_empty());
    }
}
