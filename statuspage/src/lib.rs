//! The admin listeners' status pages (the gateway's and the DNS server's `/`), as Envoy's admin home
//! and HAProxy's stats page are for those proxies: server-rendered HTML that works without a script,
//! plus a small script (served by the binary, no CDN, no build step) that refreshes it.
//!
//! A page is built once per request from live state as sections of tables. Every cell whose value
//! moves has a key; the page's JSON (`/status.json`) is those keys' texts and tones from the same
//! build, so the HTML and the refresh format a value in one place. The script swaps cell texts in
//! place and fetches the page again only when its shape (the set of keys) changes: an endpoint
//! came or went, a reload changed the models. Off loopback the admin API wants a token: the page
//! asks for it and sends it as a bearer token (kept in the tab's session storage, never a cookie,
//! so another site cannot post to the admin API as the operator).

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The page script.
pub const SCRIPT: &str = include_str!("page.js");
/// The page style.
pub const STYLE: &str = include_str!("page.css");

/// How a cell's value reads at a glance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tone {
    /// Plain.
    Plain,
    /// Good (healthy, serving).
    Good,
    /// Needs a look (drained, in panic, degraded).
    Warn,
    /// Bad (down, ejected, failing).
    Bad,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Plain => "",
            Tone::Good => "good",
            Tone::Warn => "warn",
            Tone::Bad => "bad",
        }
    }
}

/// One table cell.
#[derive(Clone, Debug)]
pub struct Cell {
    /// Key of a live cell (refreshed from the page's JSON); `None` for a fixed one.
    pub key: Option<String>,
    /// What it shows.
    pub text: String,
    /// How it reads.
    pub tone: Tone,
    /// A button that posts to `action` + its text (e.g. `/endpoints/e1/` + `drain`).
    pub action: Option<String>,
}

impl Cell {
    /// A fixed cell.
    pub fn text(text: impl Into<String>) -> Cell {
        Cell {
            key: None,
            text: text.into(),
            tone: Tone::Plain,
            action: None,
        }
    }

    /// A live cell.
    pub fn live(key: impl Into<String>, text: impl Into<String>, tone: Tone) -> Cell {
        Cell {
            key: Some(key.into()),
            text: text.into(),
            tone,
            action: None,
        }
    }

    /// A live button: its text is the verb posted to `action` + text.
    pub fn button(key: impl Into<String>, verb: impl Into<String>, action: impl Into<String>) -> Cell {
        Cell {
            key: Some(key.into()),
            text: verb.into(),
            tone: Tone::Plain,
            action: Some(action.into()),
        }
    }
}

/// A table: a header row and rows of cells.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Column titles.
    pub columns: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these columns.
    pub fn new(columns: &[&str]) -> Table {
        Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }
}

/// A titled part of a page: a line of facts, then tables.
#[derive(Clone, Debug, Default)]
pub struct Section {
    /// Title.
    pub title: String,
    /// Facts above the tables (live or fixed cells, shown inline).
    pub facts: Vec<(String, Cell)>,
    /// Tables, each with an optional caption.
    pub tables: Vec<(Option<String>, Table)>,
}

impl Section {
    /// An empty section.
    pub fn new(title: impl Into<String>) -> Section {
        Section {
            title: title.into(),
            ..Section::default()
        }
    }

    /// Adds a fact.
    pub fn fact(&mut self, name: &str, cell: Cell) {
        self.facts.push((name.to_string(), cell));
    }

    /// Adds a table.
    pub fn table(&mut self, caption: Option<String>, table: Table) {
        self.tables.push((caption, table));
    }
}

/// A status page.
#[derive(Clone, Debug, Default)]
pub struct Page {
    /// Title (the process kind and where it runs).
    pub title: String,
    /// Sections in order.
    pub sections: Vec<Section>,
}

impl Page {
    fn cells(&self) -> impl Iterator<Item = &Cell> {
        self.sections.iter().flat_map(|s| {
            s.facts
                .iter()
                .map(|(_, c)| c)
                .chain(s.tables.iter().flat_map(|(_, t)| t.rows.iter().flatten()))
        })
    }

    /// The page's shape: a hash of its live cells' keys. When it changes the script fetches the
    /// page again instead of updating cells.
    pub fn shape(&self) -> String {
        let mut keys = String::new();
        for c in self.cells() {
            if let Some(k) = &c.key {
                keys.push_str(k);
                keys.push('\n');
            }
        }
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(keys.as_bytes()))
    }

    /// The page's JSON: its shape and every live cell's text and tone.
    pub fn json(&self) -> serde_json::Value {
        let cells: BTreeMap<&str, (&str, Tone)> = self
            .cells()
            .filter_map(|c| Some((c.key.as_deref()?, (c.text.as_str(), c.tone))))
            .collect();
        serde_json::json!({ "shape": self.shape(), "cells": cells })
    }

    /// The page as HTML. `authorized`: false renders only the token prompt (a client off loopback
    /// without a token), which the script fills in once it has one.
    pub fn html(&self, authorized: bool, refresh_ms: u32) -> String {
        let mut h = String::with_capacity(16 * 1024);
        let title = escape(&self.title);
        let _ = write!(
            h,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title><style>{STYLE}</style></head><body data-refresh=\"{refresh_ms}\">\
             <header><h1>{title}</h1><span id=\"updated\"></span></header>\
             <form id=\"login\"{}><label>Admin token <input type=\"password\" name=\"token\" autocomplete=\"off\"></label>\
             <button>Show</button><span class=\"why\">This admin API asks clients off loopback for its token.</span></form>",
            if authorized { " hidden" } else { "" }
        );
        let shape = if authorized { self.shape() } else { String::new() };
        let _ = write!(h, "<main id=\"main\" data-shape=\"{shape}\">");
        if authorized {
            for s in &self.sections {
                section(&mut h, s);
            }
        }
        let _ = write!(h, "</main><script>{SCRIPT}</script></body></html>");
        h
    }
}

fn section(h: &mut String, s: &Section) {
    let _ = write!(h, "<section><h2>{}</h2>", escape(&s.title));
    if !s.facts.is_empty() {
        h.push_str("<dl>");
        for (name, c) in &s.facts {
            let _ = write!(h, "<div><dt>{}</dt>", escape(name));
            cell(h, "dd", c);
            h.push_str("</div>");
        }
        h.push_str("</dl>");
    }
    for (caption, t) in &s.tables {
        h.push_str("<table>");
        if let Some(c) = caption {
            let _ = write!(h, "<caption>{}</caption>", escape(c));
        }
        h.push_str("<thead><tr>");
        for c in &t.columns {
            let _ = write!(h, "<th>{}</th>", escape(c));
        }
        h.push_str("</tr></thead><tbody>");
        for row in &t.rows {
            h.push_str("<tr>");
            for c in row {
                cell(h, "td", c);
            }
            h.push_str("</tr>");
        }
        h.push_str("</tbody></table>");
    }
    h.push_str("</section>");
}

fn cell(h: &mut String, tag: &str, c: &Cell) {
    let _ = write!(h, "<{tag}");
    let class = c.tone.class();
    if !class.is_empty() {
        let _ = write!(h, " class=\"{class}\"");
    }
    let key = c.key.as_deref().map(escape);
    match (&c.action, &key) {
        (Some(action), Some(key)) => {
            let _ = write!(
                h,
                "><button data-f=\"{key}\" data-post=\"{}\">{}</button></{tag}>",
                escape(action),
                escape(&c.text)
            );
        }
        _ => {
            if let Some(key) = &key {
                let _ = write!(h, " data-f=\"{key}\"");
            }
            let _ = write!(h, ">{}</{tag}>", escape(&c.text));
        }
    }
}

/// Escapes text for HTML content and double-quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number of requests per second, for people.
pub fn rate(per_s: f64) -> String {
    if per_s >= 100.0 {
        format!("{per_s:.0}/s")
    } else {
        format!("{per_s:.1}/s")
    }
}

/// A share in [0, 1] as a percentage.
pub fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(id: &str) -> Page {
        let mut s = Section::new("Endpoints <all>");
        s.fact("generation", Cell::live("gen", "3", Tone::Plain));
        let mut t = Table::new(&["id", "health", ""]);
        t.row(vec![
            Cell::text(id),
            Cell::live(format!("ep/{id}/health"), "healthy", Tone::Good),
            Cell::button(format!("ep/{id}/drain"), "drain", format!("/endpoints/{id}/")),
        ]);
        s.table(Some("v1".into()), t);
        Page {
            title: "gateway".into(),
            sections: vec![s],
        }
    }

    #[test]
    fn html_escapes_and_marks_live_cells() {
        let html = page("e\"1<x>").html(true, 2000);
        assert!(html.contains("Endpoints &lt;all&gt;"));
        assert!(html.contains("<td>e&quot;1&lt;x&gt;</td>"));
        assert!(html.contains("<td class=\"good\" data-f=\"ep/e&quot;1&lt;x&gt;/health\">healthy</td>"));
        assert!(html.contains("data-post=\"/endpoints/e&quot;1&lt;x&gt;/\">drain</button>"));
        assert!(!html.contains("id=\"login\" hidden") || html.contains("<form id=\"login\" hidden>"));
    }

    #[test]
    fn unauthorized_pages_hold_no_state() {
        let html = page("secret-endpoint").html(false, 2000);
        assert!(!html.contains("secret-endpoint"));
        assert!(html.contains("<form id=\"login\">"));
    }

    #[test]
    fn json_has_every_live_cell_and_the_shape_follows_the_keys() {
        let p = page("e1");
        let j = p.json();
        assert_eq!(j["cells"]["ep/e1/health"][0], "healthy");
        assert_eq!(j["cells"]["ep/e1/health"][1], "good");
        assert_eq!(j["cells"]["ep/e1/drain"][0], "drain");
        assert_eq!(j["shape"], p.shape());
        let mut moved = page("e1");
        moved.sections[0].facts[0].1.text = "4".into();
        assert_eq!(moved.shape(), p.shape(), "values do not change the shape");
        assert_ne!(page("e2").shape(), p.shape(), "keys do");
    }
}
