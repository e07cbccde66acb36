//! The console's HTML: server-rendered pages, escaped at every interpolation
//! (host names, GPU names, errors and notes come from agents and are hostile
//! until escaped), one stylesheet inline and one small script of our own.

use fleetbench_proto::v1;

use super::session::Viewer;

/// Text as HTML: the five characters that could open markup or an attribute.
pub use fleetbench_report::html_escape as esc;

/// A path segment or query value for an href (ids are checked before they
/// get here; this is the second line of defence).
pub fn url_part(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d1d1f}\
header{background:#1d2733;color:#fff;padding:.6em 1.2em;display:flex;gap:1.4em;align-items:center}\
header a{color:#fff;text-decoration:none}header .who{margin-left:auto;font-size:.9em}\
main{padding:1em 1.2em}table{border-collapse:collapse;margin:.6em 0}\
th,td{border-bottom:1px solid #ddd;padding:.3em .7em;text-align:left;font-size:.92em}\
th{background:#f3f4f6}.num{text-align:right}.sim{color:#9a3412;font-weight:600}\
.bad{color:#b91c1c}.good{color:#15803d}.muted{color:#6b7280}form.inline{display:inline}\
fieldset{border:1px solid #ddd;margin:.8em 0}label{margin-right:1em}\
.bar{background:#e5e7eb;width:10em;height:.8em;display:inline-block}\
.bar span{background:#2563eb;height:100%;display:block}";

/// A whole page around `body`.
pub fn page(title: &str, viewer: Option<&Viewer>, body: &str) -> String {
    let who = match viewer {
        Some(v) if v.logged_in => format!(
            "<span class=\"who\">{} access · <form class=\"inline\" method=\"post\" action=\"/logout\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Log out</button></form></span>",
            if v.may_change() {
                "operator"
            } else {
                "read-only"
            },
            esc(&v.csrf)
        ),
        Some(_) => "<span class=\"who\">open console (no tokens configured)</span>".to_string(),
        None => String::new(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{} · fleetbench</title>\
         <style>{STYLE}</style><script src=\"/console.js\" defer></script></head><body>\
         <header><strong>fleetbench</strong><a href=\"/\">Fleet</a><a href=\"/sweeps\">Sweeps</a>\
         <a href=\"/compare\">Compare</a>{who}</header><main>{body}</main></body></html>",
        esc(title)
    )
}

/// How long ago a Unix-milliseconds time was.
fn ago(ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let secs = (fleetbench_common::time::now_unix_ms() - ms).max(0) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=172_799 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// Agents shown on one page of the fleet table.
pub const FLEET_PAGE: usize = 200;

/// What each busy host is doing now ("cuda:0 batch 64 timed"), by host.
pub type CurrentPoints = std::collections::HashMap<String, String>;

/// The fleet page's live part: counts and one page of agents, with the
/// point each busy one is at (`current`).
pub fn fleet_fragment(
    agents: &[v1::AgentSummary],
    current: &CurrentPoints,
    page_no: usize,
) -> String {
    let connected = agents.iter().filter(|a| a.connected).count();
    let simulated = agents
        .iter()
        .filter(|a| a.inventory.as_ref().is_some_and(|i| i.simulated))
        .count();
    let pages = agents.len().div_ceil(FLEET_PAGE).max(1);
    let page_no = page_no.min(pages - 1);
    let mut rows = String::new();
    for a in agents.iter().skip(page_no * FLEET_PAGE).take(FLEET_PAGE) {
        let inv = a.inventory.clone().unwrap_or_default();
        let gpus = if inv.gpus.is_empty() {
            "CPU only".to_string()
        } else {
            inv.gpus
                .iter()
                .map(|g| esc(&g.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let driver = inv
            .gpus
            .first()
            .map(|g| esc(&g.driver_version))
            .unwrap_or_default();
        let sweep = if a.active_sweep_id.is_empty() {
            "<span class=\"muted\">idle</span>".to_string()
        } else {
            format!(
                "<a href=\"/sweeps/{}\">{}</a> {}",
                url_part(&a.active_sweep_id),
                esc(&a.active_sweep_id),
                current.get(&a.name).map(|c| esc(c)).unwrap_or_default()
            )
        };
        rows.push_str(&format!(
            "<tr><td>{}{}</td><td>{}</td><td>{gpus}</td><td>{driver}</td><td>{sweep}</td><td>{}</td></tr>",
            esc(&a.name),
            if inv.simulated { " <span class=\"sim\">SIMULATED</span>" } else { "" },
            if a.connected { "<span class=\"good\">connected</span>" } else { "<span class=\"bad\">lost</span>" },
            ago(a.last_seen_unix_ms)
        ));
    }
    let nav = if pages > 1 {
        let mut nav = format!("<p>page {} of {pages}: ", page_no + 1);
        if page_no > 0 {
            nav.push_str(&format!("<a href=\"/?page={}\">previous</a> ", page_no - 1));
        }
        if page_no + 1 < pages {
            nav.push_str(&format!("<a href=\"/?page={}\">next</a>", page_no + 1));
        }
        nav.push_str("</p>");
        nav
    } else {
        String::new()
    };
    format!(
        "<p id=\"fleet-counts\"><strong>{}</strong> agents: <strong>{connected}</strong> connected, \
         <strong>{}</strong> lost{}</p>{nav}\
         <table id=\"fleet\"><thead><tr><th>agent</th><th>state</th><th>GPUs</th><th>driver</th>\
         <th>current sweep</th><th>last seen</th></tr></thead><tbody>{rows}</tbody></table>",
        agents.len(),
        agents.len() - connected,
        if simulated > 0 {
            format!(", <span class=\"sim\">{simulated} simulated</span>")
        } else {
            String::new()
        }
    )
}

/// The form that starts a sweep (operators only).
pub fn start_form(viewer: &Viewer) -> String {
    if !viewer.may_change() {
        return String::new();
    }
    format!(
        "<form method=\"post\" action=\"/sweeps\" id=\"start-sweep\"><fieldset><legend>Start a sweep</legend>\
         <label>batch sizes <input name=\"batch_sizes\" value=\"8,16,32,64,128\" size=\"16\"></label>\
         <label>iterations <input name=\"iterations\" value=\"20\" size=\"5\"></label>\
         <label>dtype <select name=\"dtype\"><option>f32</option><option>f16</option><option>bf16</option></select></label>\
         <label>hosts <input name=\"hosts\" placeholder=\"all connected\" size=\"20\"></label>\
         <label>GPU model <input name=\"gpu_model\" placeholder=\"any\" size=\"10\"></label>\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button>Start</button></fieldset></form>",
        esc(&viewer.csrf)
    )
}

/// A sweep's live part: its state and every host's progress.
pub fn sweep_fragment(summary: &v1::SweepSummary, hosts: &[v1::HostStatus]) -> String {
    let mut rows = String::new();
    for h in hosts {
        let pct = (100 * h.points_done)
            .checked_div(h.points_total)
            .unwrap_or(0);
        rows.push_str(&format!(
            "<tr><td>{}{}</td><td>{}</td><td><span class=\"bar\"><span style=\"width:{pct}%\"></span></span> \
             {}/{}</td><td>{}</td><td class=\"bad\">{}</td></tr>",
            esc(&h.host),
            if h.simulated { " <span class=\"sim\">SIMULATED</span>" } else { "" },
            esc(&h.state),
            h.points_done,
            h.points_total,
            esc(&h.current),
            esc(&h.error)
        ));
    }
    format!(
        "<p id=\"sweep-state\" data-state=\"{}\">state <strong>{}</strong>: {} of {} hosts done, {} failed</p>\
         <table id=\"hosts\"><thead><tr><th>host</th><th>state</th><th>points</th><th>now</th><th>error</th></tr></thead>\
         <tbody>{rows}</tbody></table>",
        esc(&summary.state),
        esc(&summary.state),
        summary.hosts_done,
        summary.hosts,
        summary.hosts_failed
    )
}

/// The spec in one line.
pub fn spec_line(spec: Option<&v1::SweepSpec>) -> String {
    match spec {
        Some(s) => format!(
            "{} · {} · batch {} · seq {} · {} iterations",
            esc(&s.model),
            esc(&s.dtype),
            s.batch_sizes
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            s.seq_len,
            s.iterations
        ),
        None => String::new(),
    }
}

/// The console's one script: live updates by Server-Sent Events on the
/// pages that have them (no polling, no framework, nothing from elsewhere).
pub const SCRIPT: &str = r#""use strict";
document.addEventListener("DOMContentLoaded", () => {
  const live = document.querySelector("[data-live]");
  if (!live || !window.EventSource) return;
  const source = new EventSource(live.dataset.live);
  source.addEventListener("update", (e) => { live.innerHTML = e.data; });
  source.addEventListener("end", () => { source.close(); if (live.dataset.reload) location.reload(); });
});
"#;
