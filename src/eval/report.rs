//! `results.json`, `results.csv` and `results.md` (tables shaped like OpenOOD's: rows = OOD sets
//! and near/far means, columns FPR@95, AUROC, AUPR-IN, AUPR-OUT, ACC; all ×100).

use std::fmt::Write as _;
use std::path::Path;

use super::metrics::OodMetrics;
use super::run::{EvalReport, MethodReport, MethodSummary, SummaryRow};
use crate::error::{write_atomic, Error, Result};

pub fn write_all(report: &EvalReport, dir: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(report).map_err(|e| Error::Input(format!("serialising the report: {e}")))?;
    write_atomic(&dir.join("results.json"), json.as_bytes())?;
    write_atomic(&dir.join("results.csv"), csv(report).as_bytes())?;
    write_atomic(&dir.join("results.md"), markdown(report).as_bytes())
}

/// The metrics of row `name` (an OOD set, or "near" / "far") of a method.
pub fn row<'a>(method: &'a MethodReport, name: &str) -> Option<&'a OodMetrics> {
    match name {
        "near" => method.near.as_ref(),
        "far" => method.far.as_ref(),
        _ => method.sets.iter().find(|s| s.name == name).map(|s| &s.metrics),
    }
}

/// One line per (model, method, row); fractions ×100.
pub fn csv(report: &EvalReport) -> String {
    let mut out = String::from("model,method,ood,group,fpr95,auroc,aupr_in,aupr_out,acc\n");
    for model in &report.models {
        let acc = model.accuracy.map_or(String::new(), |a| format!("{:.4}", 100.0 * a));
        for method in &model.methods {
            let rows = method.sets.iter().map(|s| (s.name.as_str(), format!("{:?}", s.group).to_lowercase(), &s.metrics));
            let means = [("near", &method.near), ("far", &method.far)]
                .into_iter()
                .filter_map(|(n, m)| m.as_ref().map(|m| (n, "mean".to_string(), m)));
            for (name, group, m) in rows.chain(means) {
                let _ = writeln!(
                    out,
                    "{},{},{name},{group},{:.4},{:.4},{:.4},{:.4},{acc}",
                    model.path.display(),
                    method.name,
                    100.0 * m.fpr95,
                    100.0 * m.auroc,
                    100.0 * m.aupr_in,
                    100.0 * m.aupr_out
                );
            }
        }
    }
    out
}

fn cell((mean, std): (f64, f64), models: usize) -> String {
    if models > 1 {
        format!("{:.2} ± {:.2}", 100.0 * mean, 100.0 * std)
    } else {
        format!("{:.2}", 100.0 * mean)
    }
}

/// One OpenOOD-shaped table per method, then an overview and the selected parameters.
pub fn markdown(report: &EvalReport) -> String {
    let models = report.models.len();
    let mut out = String::from("# NAC evaluation\n\n");
    for m in &report.models {
        let acc = m.accuracy.map_or("n/a".to_string(), |a| format!("{:.2}", 100.0 * a));
        let _ =
            writeln!(out, "- `{}` ({}, fingerprint {}, preset {}): ID accuracy {acc}", m.path.display(), m.arch, m.fingerprint, m.preset);
    }
    let _ = writeln!(out, "- preprocessing `{}`; {:.1} s in all", report.preprocessing, report.seconds);
    if models > 1 {
        let _ = writeln!(out, "- cells are mean ± sample std over the {models} models");
    }
    out.push_str("\n## Methods × datasets (FPR@95 ↓ / AUROC ↑, best per column in bold)\n\n");
    out.push_str(&comparison(report));
    out.push_str("\n## Overview (AUROC)\n\n");
    out.push_str(&overview(report));
    if let Some(first) = report.models.first() {
        let host = &first.pooling_host;
        let _ = writeln!(
            out,
            "\n## Time per method on top of the shared passes ({:.1} s pooling, first model: the host waited {:.1} s for decoded batches, \
             spent {:.1} s writing inputs and submitting work, and waited {:.1} s for the GPU)\n",
            first.pooling_seconds, host.batch_wait_s, host.submit_s, host.gpu_wait_s
        );
        out.push_str("| method | settings | fit s | score s |\n|---|---|---|---|\n");
        for m in &first.methods {
            let settings = m.settings.clone().unwrap_or_default();
            let _ = writeln!(out, "| {} | {settings} | {:.3} | {:.3} |", m.name, m.fit_seconds, m.score_seconds);
        }
    }
    for summary in &report.summary {
        let _ = writeln!(out, "\n## {}\n", summary.name);
        out.push_str(&method_table(summary, models));
        if let Some(method) = report.models.first().and_then(|m| m.methods.iter().find(|x| x.name == summary.name)) {
            out.push_str(&method_notes(method));
        }
    }
    out
}

/// The talk's table: rows = methods, columns = FPR@95 and AUROC of each OOD set and of the
/// near/far means (mean over models), the best value of each column in bold.
pub fn comparison(report: &EvalReport) -> String {
    let models = report.models.len();
    let Some(first) = report.summary.first() else { return String::new() };
    let names: Vec<String> = first.rows.iter().map(|r| r.name.clone()).collect();
    let label = |n: &str| match n {
        "near" => "near (mean)".to_string(),
        "far" => "far (mean)".to_string(),
        other => other.to_string(),
    };
    let mut out = String::from("| method |");
    for n in &names {
        let _ = write!(out, " {} FPR@95 | {} AUROC |", label(n), label(n));
    }
    let _ = writeln!(out, "\n|---|{}", "---|---|".repeat(names.len()));
    let value =
        |s: &MethodSummary, name: &str, auroc: bool| s.rows.iter().find(|r| r.name == name).map(|r| if auroc { r.auroc } else { r.fpr95 });
    let best = |name: &str, auroc: bool| -> Option<f64> {
        let values = report.summary.iter().filter_map(|s| value(s, name, auroc)).map(|v| v.0);
        if auroc {
            values.reduce(f64::max)
        } else {
            values.reduce(f64::min)
        }
    };
    for s in &report.summary {
        let _ = write!(out, "| {} |", s.name);
        for n in &names {
            for auroc in [false, true] {
                let text = match value(s, n, auroc) {
                    Some(v) if Some(v.0) == best(n, auroc) => format!("**{}**", cell(v, models)),
                    Some(v) => cell(v, models),
                    None => "n/a".into(),
                };
                let _ = write!(out, " {text} |");
            }
        }
        out.push('\n');
    }
    out
}

/// Rows = methods, columns = AUROC per OOD set and the near/far means (the first model's sets).
pub fn overview(report: &EvalReport) -> String {
    let models = report.models.len();
    let Some(first) = report.summary.first() else { return String::new() };
    let names: Vec<&str> = first.rows.iter().map(|r| r.name.as_str()).collect();
    let mut out = format!("| method | {} | ACC |\n|---|{}---|\n", names.join(" | "), "---|".repeat(names.len()));
    for s in &report.summary {
        let cells: Vec<String> = s.rows.iter().map(|r| cell(r.auroc, models)).collect();
        let acc = s.accuracy.map_or("n/a".into(), |a| cell(a, models));
        let _ = writeln!(out, "| {} | {} | {acc} |", s.name, cells.join(" | "));
    }
    out
}

fn method_table(summary: &MethodSummary, models: usize) -> String {
    let mut out = String::from("| OOD set | FPR@95 ↓ | AUROC ↑ | AUPR-IN ↑ | AUPR-OUT ↑ | ACC ↑ |\n|---|---|---|---|---|---|\n");
    let acc = summary.accuracy.map_or("n/a".into(), |a| cell(a, models));
    for SummaryRow { name, fpr95, auroc, aupr_in, aupr_out } in &summary.rows {
        let label = match name.as_str() {
            "near" => "**near (mean)**".to_string(),
            "far" => "**far (mean)**".to_string(),
            other => other.to_string(),
        };
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {acc} |",
            cell(*fpr95, models),
            cell(*auroc, models),
            cell(*aupr_in, models),
            cell(*aupr_out, models)
        );
    }
    out
}

/// Parameters, how they were chosen, ID-only thresholds and the sanity check (first model).
fn method_notes(method: &MethodReport) -> String {
    let mut out = String::new();
    if let Some(params) = &method.params {
        let text: Vec<String> = params.iter().map(|p| format!("`{p}`")).collect();
        let _ = writeln!(out, "\nParameters (O/M/α): {}", text.join(", "));
    }
    if let Some(s) = &method.selection {
        let _ = writeln!(
            out,
            "\nSelected by {} = {:.2} over {} combinations ({} GPU re-binnings, {:.2} s, no network pass).",
            s.criterion,
            100.0 * s.validation_auroc,
            s.combinations,
            s.layer_evaluations,
            s.seconds
        );
    }
    if let Some(a) = method.sanity_auroc {
        let _ = writeln!(out, "\nSanity check: AUROC of ID val against unprofiled training samples = {:.2} (50 is ideal).", 100.0 * a);
    }
    let with_thresholds: Vec<_> = method.sets.iter().filter(|s| !s.thresholds.is_empty()).collect();
    if !with_thresholds.is_empty() {
        out.push_str("\nID-only thresholds (set on ID val): OOD TPR (ID test FPR) ×100\n\n| OOD set |");
        let targets: Vec<f64> = with_thresholds[0].thresholds.iter().map(|t| t.target_id_fpr).collect();
        for t in &targets {
            let _ = write!(out, " at {:.0} % ID FPR |", 100.0 * t);
        }
        let _ = writeln!(out, "\n|---|{}", "---|".repeat(targets.len()));
        for s in with_thresholds {
            let cells: Vec<String> =
                s.thresholds.iter().map(|t| format!("{:.2} ({:.2})", 100.0 * t.ood_tpr, 100.0 * t.id_test_fpr)).collect();
            let _ = writeln!(out, "| {} | {} |", s.name, cells.join(" | "));
        }
    }
    out
}
