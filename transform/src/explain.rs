//! `chitose transform policy explain`: what happens to every field of
//! every event type, generated from the compiled policy (never written by
//! hand, so it cannot drift from what the transform does).

use crate::fields::Leaf;
use crate::plan::{ADDED, JUDGEMENTS, Source, TablePlan};
use crate::policy::{GeoLevel, IcdLevel, Op, Policy, Trunc};
use std::fmt::Write;

fn describe(op: &Op, policy: &Policy, section: &str, field: &str) -> String {
    match op {
        Op::Keep => "kept as is".into(),
        Op::KeepFreeText => "RISK: free text kept as typed; names and numbers the identifier check does not know reach the zone".into(),
        Op::Vocabulary { list } => format!("kept only when it is a value of the reference vocabulary {list} (in its spelling), else null"),
        Op::Hash => "keyed hash (HMAC-SHA256 under the event-id key, with hub and facility); duplicates keep one value, the hub's id cannot be joined back".into(),
        Op::Drop => "dropped".into(),
        Op::DropFreeText => "dropped: free text, where identifiers hide".into(),
        Op::Pseudonym => {
            let bases: Vec<&str> = policy
                .linkage
                .iter()
                .filter(|b| b.inputs().iter().any(|(s, n)| *s == section && *n == field))
                .map(|b| b.name())
                .collect();
            format!(
                "input to the HMAC-SHA256 pseudonym (basis {}), then dropped",
                bases.join(", ")
            )
        }
        Op::Prefecture => "kept; prefecture name added from the reference table".into(),
        Op::Facility => "generalized to the facility's prefecture and type (medical, dental, pharmacy); the code is dropped".into(),
        Op::Date { shift, outputs } => {
            let shift = if *shift && policy.max_shift_days > 0 {
                format!("shifted by the patient's offset (±{} days)", policy.max_shift_days)
            } else {
                "not shifted".into()
            };
            let outs: Vec<String> = outputs
                .iter()
                .map(|(c, t)| {
                    format!(
                        "{c} to the {}",
                        match t {
                            Trunc::Day => "day",
                            Trunc::Month => "month",
                            Trunc::Year => "year",
                        }
                    )
                })
                .collect();
            format!("{shift}; {}; the exact time is dropped", outs.join(", "))
        }
        Op::Age { top_code } => format!(
            "birth year, the age reached in the event's calendar year (event year − birth year{}) and its 5-year band, so no birthday is told; top-coded at {top_code}+ (band {top_code}+, birth year null); the date is dropped",
            if policy.max_shift_days > 0 { ", on the shifted date" } else { "" }
        ),
        Op::Residence { level } => match level {
            GeoLevel::Municipality => "residence municipality and prefecture (from the municipality code, else a postal prefix naming one municipality); then dropped".into(),
            GeoLevel::Prefecture => "residence prefecture only (from the municipality code, else the postal prefix); then dropped".into(),
        },
        Op::Icd10 { finest } => format!(
            "rolled up to 3 characters, block and chapter with names from the reference table; finest level kept: {}",
            match finest {
                IcdLevel::Code => "the full code",
                IcdLevel::Category => "the 3-character category (full code null)",
                IcdLevel::Block => "the block (code and category null)",
                IcdLevel::Chapter => "the chapter (code, category and block null)",
            }
        ),
        Op::Numeric { bottom, top } => {
            let mut parts = Vec::new();
            if let Some(b) = bottom {
                parts.push(format!("values below {b} written as {b}"));
            }
            if let Some(t) = top {
                parts.push(format!("values above {t} written as {t}"));
            }
            format!("top/bottom coded: {}", parts.join(", "))
        }
        Op::DrugClass => "kept; therapeutic class (first 3 digits) and its name added".into(),
        Op::Jlac10 => "kept; analyte (first 5 characters) added".into(),
        Op::LengthOfStay => "whole days from the event date (length_of_stay_days); then dropped".into(),
    }
}

/// The Markdown explanation of `policy` as compiled into `plans`.
pub fn explain(policy: &Policy, plans: &[TablePlan], raw: &[Leaf]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Policy {} version {}\n",
        policy.profile, policy.version
    );
    let _ = writeln!(s, "{}\n", policy.description);
    let _ = writeln!(
        s,
        "Pseudonym: HMAC-SHA256 of the first linkage basis present ({}), base32, over \
         length-prefixed normalized parts (insurance only with its 枝番); the key id is \
         written with it. Event id: HMAC-SHA256 under the event-id key, never the hub's id. \
         Date shift: {}.\n",
        policy
            .linkage
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(" → "),
        if policy.max_shift_days == 0 {
            "none".to_owned()
        } else {
            format!(
                "one offset per patient in ±{} days, from HMAC(date key, linkage key); ages on the shifted date",
                policy.max_shift_days
            )
        }
    );
    for plan in plans {
        let t = plan.event_type.symbol();
        let _ = writeln!(s, "## {t} → health.pseudo.{t} ({})\n", plan.full_name);
        let _ = writeln!(s, "| raw field | class | what happens | output columns |");
        let _ = writeln!(s, "|---|---|---|---|");
        for rule in policy
            .rules
            .iter()
            .filter(|r| r.section == "envelope" || r.section == "patient" || r.section == t)
        {
            let from = format!("[{}] {}", rule.section, rule.field);
            let class = raw
                .iter()
                .find(|l| l.section == rule.section && l.name == rule.field)
                .map_or("", |l| l.doc.split(':').next().unwrap_or(""));
            let shared_residence = matches!(rule.op, Op::Residence { .. });
            let cols: Vec<&str> = plan
                .slots
                .iter()
                .filter(|sl| {
                    sl.from.as_deref() == Some(from.as_str())
                        // postal_code and municipality_code feed the same columns.
                        || (shared_residence
                            && matches!(sl.source, Source::ResidenceMunicipality | Source::ResidencePrefecture))
                })
                .map(|sl| sl.name.as_str())
                .collect();
            let field = if rule.section == t {
                rule.field.clone()
            } else {
                format!("{}.{}", rule.section, rule.field)
            };
            let _ = writeln!(
                s,
                "| {field} | {class} | {} | {} |",
                describe(&rule.op, policy, &rule.section, &rule.field),
                if cols.is_empty() {
                    "—".to_owned()
                } else {
                    cols.join(", ")
                }
            );
        }
        for sl in &plan.slots {
            match &sl.source {
                Source::Added(a) => {
                    let what = a.what();
                    let _ = writeln!(s, "| (added) | OP | {what} | {} |", sl.name);
                }
                Source::Judgement(fields) => {
                    let _ = writeln!(
                        s,
                        "| (derived) | SA | 特定健診 judgement of {} against the reference thresholds: normal, guidance (保健指導), referral (受診勧奨) or unknown | {} |",
                        fields.join(", "),
                        sl.name
                    );
                }
                Source::Null if ADDED.iter().any(|(n, _)| *n == sl.name) => {
                    let what = ADDED
                        .iter()
                        .find(|(n, _)| *n == sl.name)
                        .map_or("", |(_, w)| *w);
                    let _ = writeln!(
                        s,
                        "| (added) | OP | dropped by this profile ([added]): {what} | {} (null) |",
                        sl.name
                    );
                }
                Source::Null => {
                    let _ = writeln!(
                        s,
                        "| (none) | — | no rule writes it under this profile: always null | {} |",
                        sl.name
                    );
                }
                _ => {}
            }
        }
        let _ = writeln!(s);
    }
    debug_assert!(JUDGEMENTS.len() == 4);
    s
}
