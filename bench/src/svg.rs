//! The latency chart: one panel per plugin and command (ADD, DEL) of its sequential
//! configuration, each side's distribution drawn as an empirical CDF (fraction of calls done
//! by a given time) on a log time axis, twill beside the reference, netavark and the kernel
//! floor. Hand-written SVG, no dependencies.

use crate::runner::Op;
use crate::table::Row;
use std::fmt::Write;

const PANEL_W: f64 = 430.0;
const PANEL_H: f64 = 230.0;
const MARGIN_L: f64 = 50.0;
const MARGIN_R: f64 = 15.0;
const MARGIN_T: f64 = 30.0;
const MARGIN_B: f64 = 40.0;
const TOP: f64 = 50.0;

/// Colour and dash of a side's curve.
fn style(side: &str) -> (&'static str, &'static str) {
    match side {
        "twill" => ("#1f6fb4", ""),
        "ref" => ("#d62728", ""),
        "netavark" => ("#2ca02c", ""),
        _ => ("#555555", "4 3"),
    }
}

/// What a side is called in the legend.
fn legend_name(side: &str) -> &str {
    match side {
        "ref" => "reference (Go)",
        "bare" => "kernel floor (bare)",
        other => other,
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The chart of `rows` as an SVG document; None when no row is sequential.
pub fn chart(rows: &[Row], title: &str) -> Option<String> {
    // (plugin, config) of each plugin's first sequential configuration, in recording order.
    let mut panels: Vec<(String, String, Op)> = Vec::new();
    for r in rows.iter().filter(|r| r.config.starts_with("seq")) {
        if panels.iter().any(|p| p.0 == r.plugin && p.1 != r.config) {
            continue;
        }
        let key = (r.plugin.clone(), r.config.clone(), r.op);
        if !panels.contains(&key) {
            panels.push(key);
        }
    }
    if panels.is_empty() {
        return None;
    }
    panels.sort_by_key(|p| {
        let first = rows.iter().position(|r| r.plugin == p.0).unwrap_or(0);
        (first, p.2)
    });
    let cols = 2.0;
    let nrows = panels.len().div_ceil(2) as f64;
    let width = cols * PANEL_W;
    let height = TOP + nrows * PANEL_H + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">"
    );
    let _ = writeln!(
        s,
        "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"18\" \
         font-size=\"14\" font-weight=\"bold\">{}</text>",
        esc(title)
    );
    // Legend.
    let mut lx = 10.0;
    for side in ["twill", "ref", "netavark", "bare"] {
        if !rows.iter().any(|r| r.side == side) {
            continue;
        }
        let (c, dash) = style(side);
        let _ = writeln!(
            s,
            "<line x1=\"{lx}\" y1=\"34\" x2=\"{}\" y2=\"34\" stroke=\"{c}\" stroke-width=\"2.5\" \
             stroke-dasharray=\"{dash}\"/><text x=\"{}\" y=\"38\">{}</text>",
            lx + 22.0,
            lx + 26.0,
            esc(legend_name(side))
        );
        lx += 40.0 + 7.0 * legend_name(side).len() as f64;
    }
    for (k, (plugin, config, op)) in panels.iter().enumerate() {
        let ox = (k % 2) as f64 * PANEL_W;
        let oy = TOP + (k / 2) as f64 * PANEL_H;
        let sides: Vec<&Row> = rows
            .iter()
            .filter(|r| &r.plugin == plugin && &r.config == config && r.op == *op)
            .collect();
        panel(
            &mut s,
            ox,
            oy,
            &format!("{plugin} {} ({config})", op.name()),
            &sides,
        );
    }
    s.push_str("</svg>\n");
    Some(s)
}

/// One panel at (ox, oy): axes, decade grid, one CDF per side.
fn panel(s: &mut String, ox: f64, oy: f64, title: &str, sides: &[&Row]) {
    let ms = |d: &std::time::Duration| d.as_secs_f64() * 1e3;
    let all = sides.iter().flat_map(|r| r.lat.iter().map(ms));
    let (lo, hi) = all.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi <= 0.0 {
        return;
    }
    let lo_dec = lo.max(1e-3).log10().floor();
    let hi_dec = hi.log10().ceil().max(lo_dec + 1.0);
    let pw = PANEL_W - MARGIN_L - MARGIN_R;
    let ph = PANEL_H - MARGIN_T - MARGIN_B;
    let (x0, y0) = (ox + MARGIN_L, oy + MARGIN_T);
    let x = |v: f64| x0 + (v.max(1e-3).log10() - lo_dec) / (hi_dec - lo_dec) * pw;
    let y = |f: f64| y0 + ph - f * ph;
    let _ = writeln!(
        s,
        "<text x=\"{x0}\" y=\"{}\" font-weight=\"bold\">{}</text>",
        oy + 18.0,
        esc(title)
    );
    let _ = writeln!(
        s,
        "<rect x=\"{x0}\" y=\"{y0}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>"
    );
    let mut d = lo_dec;
    while d <= hi_dec + 1e-9 {
        let v = 10f64.powf(d);
        let gx = x(v);
        let label = if v >= 1.0 {
            format!("{v:.0}")
        } else {
            format!("{v}")
        };
        let _ = writeln!(
            s,
            "<line x1=\"{gx:.1}\" y1=\"{y0}\" x2=\"{gx:.1}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{gx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            y0 + ph,
            y0 + ph + 14.0
        );
        d += 1.0;
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444\">ms per call (log)</text>",
        x0 + pw / 2.0,
        y0 + ph + 30.0
    );
    for f in [0.0, 0.5, 1.0] {
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}%</text>",
            x0 - 4.0,
            y(f) + 4.0,
            f * 100.0
        );
    }
    for r in sides {
        let mut v: Vec<f64> = r.lat.iter().map(ms).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len() as f64;
        let mut pts = format!("{:.1},{:.1}", x(v[0]), y(0.0));
        for (i, val) in v.iter().enumerate() {
            let _ = write!(
                pts,
                " {:.1},{:.1} {:.1},{:.1}",
                x(*val),
                y(i as f64 / n),
                x(*val),
                y((i + 1) as f64 / n)
            );
        }
        let (c, dash) = style(&r.side);
        let _ = writeln!(
            s,
            "<polyline points=\"{pts}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"1.8\" \
             stroke-dasharray=\"{dash}\"><title>{} {}: median {:.3} ms, p95 {:.3} ms, n {}</title>\
             </polyline>",
            esc(&r.side),
            r.op.name(),
            r.summary.median_ms,
            r.summary.p95_ms,
            r.summary.n
        );
    }
}
