//! A scenario's result: one JSON object (the last line of stdout with `--json`) or a
//! human table.
//!
//! Every report carries the scenario, its parameters, the product's figures, the
//! baseline's figures (or null when the scenario has no bare-relay equivalent), the
//! headline `ratio` (product / baseline, the direction named in `ratio_meaning`), the
//! machine's state around the run, and notes a reader needs to interpret the numbers
//! (batched writes, envelope kind, generator-bound phases).

use serde_json::{json, Map, Value};

use crate::sys;

/// The result of one scenario.
#[derive(Debug)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// Every option that shaped the run.
    pub parameters: Value,
    /// Product figures.
    pub product: Value,
    /// Baseline figures, if measured.
    pub baseline: Option<Value>,
    /// Headline ratio, product / baseline.
    pub ratio: Option<f64>,
    /// What `ratio` divides.
    pub ratio_meaning: &'static str,
    /// Further ratios.
    pub ratios: Map<String, Value>,
    /// Whether the generator coalesced several frames per write.
    pub client_writes_batched: bool,
    /// What the envelopes were.
    pub envelopes: &'static str,
    /// Things the reader must know.
    pub notes: Vec<String>,
    /// Load average when the run started.
    pub loadavg_before: f64,
}

impl Report {
    /// A report with the machine state taken now as "before".
    pub fn new(scenario: &'static str, parameters: Value) -> Report {
        Report {
            scenario,
            parameters,
            product: Value::Null,
            baseline: None,
            ratio: None,
            ratio_meaning: "",
            ratios: Map::new(),
            client_writes_batched: false,
            envelopes: "opaque random bytes (relay cost only; no client crypto)",
            notes: Vec::new(),
            loadavg_before: sys::load_average(),
        }
    }

    /// The JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "scenario": self.scenario,
            "parameters": self.parameters,
            "product": self.product,
            "baseline": self.baseline,
            "ratio": self.ratio.filter(|r| r.is_finite()),
            "ratio_meaning": self.ratio_meaning,
            "ratios": self.ratios,
            "client_writes_batched": self.client_writes_batched,
            "envelopes": self.envelopes,
            "notes": self.notes,
            "machine": {
                "cpus": sys::cpu_count(),
                "loadavg_before": finite(self.loadavg_before),
                "loadavg_after": finite(sys::load_average()),
                "generator": env!("CARGO_PKG_VERSION"),
                "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
            },
        })
    }

    /// The human table.
    pub fn to_table(&self) -> String {
        let mut rows = Vec::new();
        flatten("", &self.product, &mut rows);
        let mut base_rows = Vec::new();
        if let Some(baseline) = &self.baseline {
            flatten("", baseline, &mut base_rows);
        }
        for (key, _) in &base_rows {
            if !rows.iter().any(|(k, _)| k == key) {
                rows.push((key.clone(), String::new()));
            }
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(6).max(6);
        let mut out = format!("scenario: {}\n", self.scenario);
        out.push_str(&format!("parameters: {}\n", self.parameters));
        out.push_str(&format!(
            "{:width$}  {:>16}  {:>16}\n",
            "metric", "product", "baseline"
        ));
        for (key, value) in &rows {
            let base = base_rows
                .iter()
                .find(|(k, _)| k == key)
                .map_or("", |(_, v)| v.as_str());
            out.push_str(&format!("{key:width$}  {value:>16}  {base:>16}\n"));
        }
        match self.ratio.filter(|r| r.is_finite()) {
            Some(ratio) => out.push_str(&format!("ratio ({}): {ratio:.3}\n", self.ratio_meaning)),
            None => out.push_str("ratio: none (no baseline for this scenario or run)\n"),
        }
        for (name, value) in &self.ratios {
            out.push_str(&format!("  {name}: {}\n", short(value)));
        }
        out.push_str(&format!(
            "client writes batched: {}; envelopes: {}\n",
            self.client_writes_batched, self.envelopes
        ));
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        out
    }
}

/// NaN and infinities become null in JSON.
pub fn finite(value: f64) -> Value {
    if value.is_finite() {
        json!(value)
    } else {
        Value::Null
    }
}

/// Rounds for reports: 4 significant-ish digits.
pub fn round(value: f64) -> Value {
    if !value.is_finite() {
        return Value::Null;
    }
    let magnitude = value.abs();
    let digits = if magnitude >= 1000.0 {
        0
    } else if magnitude >= 10.0 {
        2
    } else {
        4
    };
    let factor = 10f64.powi(digits);
    json!((value * factor).round() / factor)
}

fn short(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&name, inner, out);
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), inner, out);
            }
        }
        other => out.push((prefix.to_owned(), short(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_contract_keys() {
        let mut report = Report::new("relay", json!({"pairs": 2}));
        report.product = json!({"msgs_per_s": 10.0});
        report.baseline = Some(json!({"msgs_per_s": 20.0}));
        report.ratio = Some(0.5);
        let value = report.to_json();
        for key in ["scenario", "parameters", "product", "baseline", "ratio"] {
            assert!(value.get(key).is_some(), "{key}");
        }
        assert!(report.to_table().contains("msgs_per_s"));
    }

    #[test]
    fn rounds() {
        assert_eq!(round(1234.567), json!(1235.0));
        assert_eq!(round(1.234567), json!(1.2346));
        assert_eq!(round(f64::NAN), Value::Null);
    }
}
