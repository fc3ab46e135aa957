//! The `--plot-speed` chart: measured decode tokens/s as bars, one per model and backend,
//! grouped by model, written as plain SVG.

use std::fmt::Write as _;

use burn_zoo::catalog::compare::{nice_step, xml_escape};

/// One bar: a model's median decode speed on one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeedBar {
    /// The model as labelled in the table.
    pub model: String,
    /// The backend's name.
    pub backend: String,
    /// Median decode tokens per second.
    pub tok_s: f64,
}

/// Bar colours per backend (Tableau 10).
const COLOURS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2",
];

fn value_label(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn unique(values: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

/// The bar chart as an SVG document.
pub fn speed_svg(bars: &[SpeedBar], runs: usize) -> String {
    let models = unique(bars.iter().map(|b| b.model.clone()));
    let backends = unique(bars.iter().map(|b| b.backend.clone()));
    let (left, right, top, bottom) = (80.0, 30.0, 70.0, 80.0);
    // The title (~55 characters of 15 px bold) and the legend (110 px a backend) must fit.
    let title_w = 480.0f64;
    let legend_w = left + 110.0 * backends.len() as f64 + 20.0;
    let min_plot_w = title_w.max(legend_w) - left - right;
    let mut group_w = 150.0f64.max(60.0 * backends.len() as f64);
    group_w = group_w.max(min_plot_w / models.len().max(1) as f64);
    let plot_w = group_w * models.len().max(1) as f64;
    let plot_h = 300.0;
    let (width, height) = (left + plot_w + right, top + plot_h + bottom);
    let max = bars.iter().map(|b| b.tok_s).fold(0.0, f64::max);
    let step = nice_step(max * 1.1, 5.0);
    let y_max = (max * 1.1 / step).ceil().max(1.0) * step;
    let y = |v: f64| top + plot_h - v / y_max * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="22" text-anchor="middle" font-size="15" font-weight="bold">Decode speed (greedy, batch 1, median of {runs} run{})</text>"#,
        width / 2.0,
        if runs == 1 { "" } else { "s" }
    );
    // Grid lines and y ticks.
    let mut v = 0.0;
    while v <= y_max + step / 2.0 {
        let yy = y(v);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#dddddd"/>"##,
            left + plot_w
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            yy + 4.0,
            value_label(v)
        );
        v += step;
    }
    // Axes.
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{:.1}" stroke="black"/>"#,
        top + plot_h
    );
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="black"/>"#,
        top + plot_h,
        left + plot_w,
        top + plot_h
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(22,{:.1}) rotate(-90)" text-anchor="middle">decode speed (tokens/s)</text>"#,
        top + plot_h / 2.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">model</text>"#,
        left + plot_w / 2.0,
        height - 20.0
    );
    // Bars, grouped by model.
    let bar_w = group_w * 0.8 / backends.len().max(1) as f64;
    for (m, model) in models.iter().enumerate() {
        let x0 = left + m as f64 * group_w + group_w * 0.1;
        for (k, backend) in backends.iter().enumerate() {
            let Some(bar) = bars
                .iter()
                .find(|b| &b.model == model && &b.backend == backend)
            else {
                continue;
            };
            let x = x0 + k as f64 * bar_w;
            let yy = y(bar.tok_s);
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{yy:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} on {}: {} tokens/s</title></rect>"#,
                x + 2.0,
                bar_w - 4.0,
                top + plot_h - yy,
                COLOURS[k % COLOURS.len()],
                xml_escape(model),
                xml_escape(backend),
                value_label(bar.tok_s)
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                x + bar_w / 2.0,
                yy - 5.0,
                value_label(bar.tok_s)
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            left + (m as f64 + 0.5) * group_w,
            top + plot_h + 18.0,
            xml_escape(model)
        );
    }
    // Legend: one swatch per backend.
    for (k, backend) in backends.iter().enumerate() {
        let x = left + k as f64 * 110.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x:.1}" y="36" width="12" height="12" fill="{}"/>"#,
            COLOURS[k % COLOURS.len()]
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="46">{}</text>"#,
            x + 17.0,
            xml_escape(backend)
        );
    }
    if bars.is_empty() {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">no decode speed was measured</text>"#,
            left + plot_w / 2.0,
            top + plot_h / 2.0
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_steps_are_round() {
        for (max, step) in [(47.0, 10.0), (0.9, 0.2), (1200.0, 500.0)] {
            assert!((nice_step(max, 5.0) - step).abs() < 1e-9, "{max}");
        }
    }

    #[test]
    fn one_bar_per_model_and_backend_with_its_value() {
        let bar = |model: &str, backend: &str, tok_s: f64| SpeedBar {
            model: model.into(),
            backend: backend.into(),
            tok_s,
        };
        let svg = speed_svg(
            &[
                bar("a", "flex", 40.0),
                bar("a", "ndarray", 20.0),
                bar("b<c", "flex", 5.25),
            ],
            3,
        );
        assert_eq!(
            svg.matches("<rect x=").count(),
            3 + 2,
            "3 bars + 2 legend swatches"
        );
        assert!(svg.contains("a on ndarray: 20.0 tokens/s"));
        assert!(
            svg.contains("b&lt;c on flex: 5.2 tokens/s")
                || svg.contains("b&lt;c on flex: 5.3 tokens/s")
        );
        assert!(svg.contains("decode speed (tokens/s)"));
        assert!(svg.contains("median of 3 runs"));
    }
}
