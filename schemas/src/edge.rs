//! Semantic checks at the edge, after a record matched the schema: what a
//! schema cannot say (the hub may only write its own prefecture, dates must
//! be possible). Ingest runs these; they live here because they are part of
//! the contract, and the synthetic generator's bad mode is tested against
//! them.

use crate::codec::Timestamp;
use crate::json::{JsonError, RejectReason};
use crate::raw::{Payload, RawEvent};

/// How far in the future an event may be (clock skew between hub and us).
pub const FUTURE_TOLERANCE_MS: i64 = 10 * 60 * 1000;
/// Oldest plausible birth date: 1890-01-01 (days since 1970).
pub const OLDEST_BIRTH_DAYS: i32 = -29_219;

fn reject(path: &str, expected: &str, found: &str) -> JsonError {
    JsonError {
        path: path.to_owned(),
        expected: expected.to_owned(),
        found: found.to_owned(),
        reason: RejectReason::Semantic,
    }
}

/// The kind of facility a 10-digit medical institution code names, from its
/// third digit, the fee table (点数表番号) of the 診療報酬 rules: 1 医科,
/// 3 歯科, 4 調剤 (pharmacies), 6 訪問看護 (visiting-nurse stations). No
/// other digit is issued.
pub fn facility_kind(code: &str) -> Option<&'static str> {
    if code.len() != 10 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match code.as_bytes()[2] {
        b'1' => Some("medical"),
        b'3' => Some("dental"),
        b'4' => Some("pharmacy"),
        b'6' => Some("visiting_nursing"),
        _ => None,
    }
}

/// Checks one converted event. `hub_prefecture` is the prefecture the
/// sender is allowed to write; `now` the receive time.
pub fn check(ev: &RawEvent, hub_prefecture: Option<&str>, now: Timestamp) -> Result<(), JsonError> {
    if let Some(hub) = hub_prefecture
        && ev.hub_prefecture != hub
    {
        return Err(reject(
            "hub_prefecture",
            &format!("this hub's prefecture {hub}"),
            "another prefecture",
        ));
    }
    if !ev.facility_code.starts_with(&ev.hub_prefecture) {
        // The first two digits of a medical institution code are its
        // prefecture; a hub sends for facilities in its own prefecture.
        return Err(reject(
            "facility_code",
            "a facility code starting with the hub's prefecture",
            "a code from another prefecture",
        ));
    }
    if facility_kind(&ev.facility_code).is_none() {
        return Err(reject(
            "facility_code",
            "a medical institution code whose third digit is a fee table (1 医科, 3 歯科, 4 調剤, 6 訪問看護)",
            "another digit",
        ));
    }
    let latest = now.0 + FUTURE_TOLERANCE_MS;
    if ev.occurred_at.0 > latest {
        return Err(reject(
            "occurred_at",
            "a time not in the future",
            "a future time",
        ));
    }
    if ev.recorded_at.0 > latest {
        return Err(reject(
            "recorded_at",
            "a time not in the future",
            "a future time",
        ));
    }
    let birth = ev.patient.birth_date;
    let today = now.jst_day();
    if birth.0 < OLDEST_BIRTH_DAYS || birth > today {
        return Err(reject(
            "patient.birth_date",
            "a birth date between 1890-01-01 and today",
            "a date outside it",
        ));
    }
    if ev.occurred_at.jst_day() < birth {
        return Err(reject(
            "occurred_at",
            "a time on or after the birth date",
            "an earlier time",
        ));
    }
    match &ev.payload {
        Payload::Encounter(e) => {
            if e.ended_at.is_some_and(|end| end < ev.occurred_at) {
                return Err(reject(
                    "payload.ended_at",
                    "a time after occurred_at",
                    "an earlier time",
                ));
            }
        }
        Payload::Diagnosis(d) => {
            if d.icd10_code.is_none()
                && d.medis_disease_code.is_none()
                && d.medis_disease_number.is_none()
            {
                return Err(reject(
                    "payload.icd10_code",
                    "an ICD-10 code, a MEDIS exchange code or a MEDIS management number",
                    "none of them",
                ));
            }
            if d.onset_date.is_some_and(|o| o < birth || o > today) {
                return Err(reject(
                    "payload.onset_date",
                    "a date between the birth date and today",
                    "a date outside it",
                ));
            }
        }
        Payload::LabResult(l) => {
            if l.value_numeric.is_none() && l.value_text.is_none() {
                return Err(reject(
                    "payload.value_numeric",
                    "a numeric or a text result",
                    "neither",
                ));
            }
        }
        Payload::Prescription(p) => {
            if p.yj_code.is_none() && p.hot_code.is_none() && p.generic_name_code.is_none() {
                return Err(reject(
                    "payload.yj_code",
                    "a YJ, HOT or generic-name code",
                    "none of them",
                ));
            }
            if p.days_supply.is_some_and(|d| !(1..=365).contains(&d)) {
                return Err(reject(
                    "payload.days_supply",
                    "1 to 365 days",
                    "a count outside it",
                ));
            }
        }
        Payload::Allergy(a) => {
            if a.substance_code.is_none() && a.substance_name.is_none() {
                return Err(reject(
                    "payload.substance_code",
                    "an allergen code or name",
                    "neither",
                ));
            }
            if a.onset_date.is_some_and(|o| o < birth || o > today) {
                return Err(reject(
                    "payload.onset_date",
                    "a date between the birth date and today",
                    "a date outside it",
                ));
            }
        }
        Payload::Checkup(_) | Payload::Vaccination(_) | Payload::Correction(_) => {}
    }
    Ok(())
}
