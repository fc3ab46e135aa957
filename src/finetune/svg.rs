//! The loss curve of a fine-tuning run as plain SVG (the style of `zoo compare --plot-speed`).

use std::fmt::Write as _;

use crate::catalog::compare::nice_step;

/// Training loss per step as a line, evaluation losses as dots.
pub fn loss_curve(losses: &[f64], eval_losses: &[(usize, f64)]) -> String {
    let (left, right, top, bottom) = (70.0, 30.0, 60.0, 60.0);
    let (plot_w, plot_h) = (560.0, 300.0);
    let (width, height) = (left + plot_w + right, top + plot_h + bottom);
    let steps = losses
        .len()
        .max(eval_losses.iter().map(|e| e.0).max().unwrap_or(0))
        .max(1);
    let max = losses
        .iter()
        .chain(eval_losses.iter().map(|e| &e.1))
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let step = nice_step(max * 1.1, 5.0);
    let y_max = (max * 1.1 / step).ceil().max(1.0) * step;
    let x = |s: f64| left + s / steps as f64 * plot_w;
    let y = |v: f64| top + plot_h - v.clamp(0.0, y_max) / y_max * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="22" text-anchor="middle" font-size="15" font-weight="bold">Fine-tuning loss ({} step{})</text>"#,
        width / 2.0,
        losses.len(),
        if losses.len() == 1 { "" } else { "s" }
    );
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
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{v:.2}</text>"#,
            left - 6.0,
            yy + 4.0
        );
        v += step;
    }
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
    let x_step = nice_step(steps as f64, 8.0).max(1.0);
    let mut t = 0.0;
    while t <= steps as f64 + 1e-9 {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0}</text>"#,
            x(t),
            top + plot_h + 18.0
        );
        t += x_step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">step</text>"#,
        left + plot_w / 2.0,
        height - 12.0
    );
    let points: Vec<String> = losses
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .map(|(i, &l)| format!("{:.1},{:.1}", x(i as f64 + 1.0), y(l)))
        .collect();
    let _ = writeln!(
        s,
        r##"<polyline fill="none" stroke="#4e79a7" stroke-width="2" points="{}"/>"##,
        points.join(" ")
    );
    for &(step, loss) in eval_losses {
        let _ = writeln!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="#f28e2b"/>"##,
            x(step as f64),
            y(loss)
        );
    }
    let (lx, ly) = (left + plot_w - 150.0, top - 18.0);
    let _ = writeln!(
        s,
        r##"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="#4e79a7" stroke-width="2"/><text x="{:.1}" y="{:.1}">train</text>"##,
        lx + 20.0,
        lx + 25.0,
        ly + 4.0
    );
    let _ = writeln!(
        s,
        r##"<circle cx="{:.1}" cy="{ly:.1}" r="4" fill="#f28e2b"/><text x="{:.1}" y="{:.1}">eval</text>"##,
        lx + 80.0,
        lx + 88.0,
        ly + 4.0
    );
    s.push_str("</svg>\n");
    s
}
