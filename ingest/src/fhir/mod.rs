//! FHIR R4 Bundles in JP Core shapes → events in the JSON form.
//!
//! Mapped: Patient (identity), Organization (medical institution number →
//! facility code), Coverage (insurance tuple), and one event per Encounter,
//! Condition, Observation of category `laboratory`, MedicationRequest and
//! Immunization; Observations of category `exam` coded with a 特定健診
//! item make one checkup event per patient and day. Every other resource, and every resource that lacks what
//! its event needs, is rejected with the reason; nothing is dropped
//! silently. The events then go through the same edge as any JSON record.
//!
//! Code systems read (JP Core): ICD-10 `http://hl7.org/fhir/sid/icd-10`,
//! MEDIS disease-name exchange code `urn:oid:1.2.392.200119.4.101.6`,
//! JLAC10 `urn:oid:1.2.392.200119.4.504`, YJ `urn:oid:1.2.392.100495.20.2.74`.

use chitose_schemas::json::{JsonError, RejectReason};
use serde_json::{Map, Value, json};

const ICD10: &str = "http://hl7.org/fhir/sid/icd-10";
const MEDIS: &str = "urn:oid:1.2.392.200119.4.101.6";
const JLAC10: &str = "urn:oid:1.2.392.200119.4.504";
const YJ: &str = "urn:oid:1.2.392.100495.20.2.74";
const INSTITUTION: &str = "http://jpfhir.jp/fhir/core/IdSystem/insurance-medical-institution-no";
const EN_REPRESENTATION: &str =
    "http://hl7.org/fhir/StructureDefinition/iso21090-EN-representation";
const COVERAGE_EXT: &str = "http://jpfhir.jp/fhir/core/Extension/StructureDefinition/JP_Coverage_";

/// One entry's outcome: an event in the JSON form, or why not.
pub type Mapped = Result<Value, JsonError>;

fn reject(i: usize, rt: &str, expected: &str, found: &str) -> JsonError {
    JsonError {
        path: format!("entry[{i}].resource({rt})"),
        expected: expected.to_owned(),
        found: found.to_owned(),
        reason: RejectReason::Unmappable,
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))
        .and_then(Value::as_str)
}

fn coding<'a>(concept: Option<&'a Value>, system: &str) -> Option<&'a str> {
    concept?
        .get("coding")?
        .as_array()?
        .iter()
        .find(|c| c.get("system").and_then(Value::as_str) == Some(system))?
        .get("code")?
        .as_str()
}

fn display(concept: Option<&Value>) -> Option<String> {
    let c = concept?;
    c.get("text")
        .and_then(Value::as_str)
        .or_else(|| {
            c.get("coding")?
                .as_array()?
                .first()?
                .get("display")?
                .as_str()
        })
        .map(str::to_owned)
}

fn has_category(r: &Value, code: &str) -> bool {
    r.get("category")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                coding(
                    Some(c),
                    "http://terminology.hl7.org/CodeSystem/observation-category",
                ) == Some(code)
            })
        })
}

/// JLAC10 codes of the 特定健診 items → checkup fields (transcribed from
/// the MHLW 特定健診 XML code table; several codes per item where the
/// method differs).
const CHECKUP_ITEMS: &[(&str, &str)] = &[
    ("9N001000000000001", "height_cm"),
    ("9N006000000000001", "weight_kg"),
    ("9N011000000000001", "bmi"),
    ("9N016160100000001", "waist_cm"),
    ("9N016160200000001", "waist_cm"),
    ("9N016160300000001", "waist_cm"),
    ("9A751000000000001", "systolic_bp"),
    ("9A752000000000001", "systolic_bp"),
    ("9A755000000000001", "systolic_bp"),
    ("9A761000000000001", "diastolic_bp"),
    ("9A762000000000001", "diastolic_bp"),
    ("9A765000000000001", "diastolic_bp"),
    ("3F015000002327101", "triglycerides_mg_dl"),
    ("3F070000002327101", "hdl_mg_dl"),
    ("3F077000002327101", "ldl_mg_dl"),
    ("3B035000002327201", "ast_u_l"),
    ("3B045000002327201", "alt_u_l"),
    ("3B090000002327101", "ggt_u_l"),
    ("3D010000001926101", "fasting_glucose_mg_dl"),
    ("3D046000001906202", "hba1c_percent"),
];

fn checkup_field(jlac10: &str) -> Option<&'static str> {
    CHECKUP_ITEMS
        .iter()
        .find(|(c, _)| *c == jlac10)
        .map(|(_, f)| *f)
}

fn ext_str<'a>(v: &'a Value, url: &str) -> Option<&'a str> {
    v.get("extension")?
        .as_array()?
        .iter()
        .find(|e| e.get("url").and_then(Value::as_str) == Some(url))?
        .get("valueString")?
        .as_str()
}

fn patient_identity(p: &Value) -> Result<Value, (&'static str, &'static str)> {
    let local = p
        .get("identifier")
        .and_then(Value::as_array)
        .and_then(|ids| ids.first())
        .and_then(|id| id.get("value"))
        .and_then(Value::as_str)
        .ok_or(("an identifier (the hub-local patient id)", "none"))?;
    let birth = p
        .get("birthDate")
        .and_then(Value::as_str)
        .ok_or(("a birthDate", "none"))?;
    let mut out = Map::new();
    out.insert("local_patient_id".into(), local.into());
    out.insert("birth_date".into(), birth.into());
    let sex = match p.get("gender").and_then(Value::as_str) {
        Some("male") => "male",
        Some("female") => "female",
        _ => "unknown",
    };
    out.insert("sex".into(), sex.into());
    for n in p
        .get("name")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let rep = n
            .get("extension")
            .and_then(Value::as_array)
            .and_then(|e| {
                e.iter()
                    .find(|x| x.get("url").and_then(Value::as_str) == Some(EN_REPRESENTATION))
            })
            .and_then(|x| x.get("valueCode"))
            .and_then(Value::as_str);
        let text = n
            .get("text")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                let family = n.get("family").and_then(Value::as_str)?;
                let given: Vec<&str> = n
                    .get("given")?
                    .as_array()?
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                Some(format!("{family}\u{3000}{}", given.join(" ")))
            });
        match (rep, text) {
            (Some("IDE"), Some(t)) => {
                out.insert("name_kanji".into(), t.into());
            }
            (Some("SYL"), Some(t)) => {
                out.insert("name_kana".into(), t.into());
            }
            _ => {}
        }
    }
    if let Some(a) = p
        .get("address")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
    {
        if let Some(pc) = a.get("postalCode").and_then(Value::as_str) {
            out.insert("postal_code".into(), pc.into());
        }
        let line = a
            .get("line")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .or_else(|| a.get("text").and_then(Value::as_str).map(str::to_owned));
        if let Some(l) = line {
            out.insert("address_line".into(), l.into());
        }
    }
    for t in p
        .get("telecom")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match (
            t.get("system").and_then(Value::as_str),
            t.get("value").and_then(Value::as_str),
        ) {
            (Some("phone"), Some(v)) if !out.contains_key("phone") => {
                out.insert("phone".into(), v.into());
            }
            (Some("email"), Some(v)) if !out.contains_key("email") => {
                out.insert("email".into(), v.into());
            }
            _ => {}
        }
    }
    Ok(Value::Object(out))
}

fn insurance(c: &Value) -> Option<Value> {
    let insurer = c
        .get("payor")?
        .as_array()?
        .first()?
        .get("identifier")?
        .get("value")?
        .as_str()?;
    let number = ext_str(c, &format!("{COVERAGE_EXT}InsuredPersonNumber"))?;
    let mut out = json!({"insurer_number": insurer, "insured_number": number});
    if let Some(s) = ext_str(c, &format!("{COVERAGE_EXT}InsuredPersonSymbol")) {
        out["insured_symbol"] = s.into();
    }
    if let Some(s) = ext_str(c, &format!("{COVERAGE_EXT}InsuredPersonSubNumber")) {
        out["insured_branch"] = s.into();
    }
    Some(out)
}

/// Maps a Bundle. An unreadable bundle is one error; otherwise one outcome
/// per entry that is not Patient, Organization or Coverage.
pub fn map_bundle(bytes: &[u8], hub_prefecture: &str) -> Result<Vec<(usize, Mapped)>, JsonError> {
    let whole = |expected: &str, found: String| JsonError {
        path: "$".into(),
        expected: expected.into(),
        found,
        reason: RejectReason::Malformed,
    };
    let b: Value = serde_json::from_slice(bytes).map_err(|e| {
        whole(
            "a FHIR Bundle (JSON)",
            format!("invalid JSON at line {} column {}", e.line(), e.column()),
        )
    })?;
    if b.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(whole("a FHIR Bundle", "another resource".into()));
    }
    let entries: Vec<&Value> = b
        .get("entry")
        .and_then(Value::as_array)
        .map(|e| e.iter().filter_map(|x| x.get("resource")).collect())
        .unwrap_or_default();
    let of = |t: &'static str| {
        entries
            .iter()
            .copied()
            .filter(move |r| r.get("resourceType").and_then(Value::as_str) == Some(t))
    };
    let patients: Vec<&Value> = of("Patient").collect();
    let facility = of("Organization")
        .flat_map(|o| {
            o.get("identifier")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .find(|id| id.get("system").and_then(Value::as_str) == Some(INSTITUTION))
        .and_then(|id| id.get("value"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let coverage = of("Coverage").find_map(insurance);

    // 特定健診 items come as one Observation each (category `exam`); the
    // items of one patient on one day make one checkup event, at the
    // position of the first.
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (i, r) in entries.iter().enumerate() {
        if r.get("resourceType").and_then(Value::as_str) == Some("Observation")
            && has_category(r, "exam")
            && coding(r.get("code"), JLAC10).is_some_and(|c| checkup_field(c).is_some())
        {
            let key = format!(
                "{}|{}",
                str_at(r, &["subject", "reference"]).unwrap_or(""),
                r.get("effectiveDateTime")
                    .and_then(Value::as_str)
                    .and_then(|d| d.get(..10))
                    .unwrap_or("")
            );
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, g)) => g.push(i),
                None => groups.push((key, vec![i])),
            }
        }
    }
    let mut out = Vec::new();
    for (i, r) in entries.iter().enumerate() {
        let rt = r.get("resourceType").and_then(Value::as_str).unwrap_or("?");
        if matches!(rt, "Patient" | "Organization" | "Coverage") {
            continue;
        }
        if let Some((_, g)) = groups.iter().find(|(_, g)| g.contains(&i)) {
            if g[0] == i {
                let mut payload = Map::new();
                for &j in g {
                    let o = entries[j];
                    let field = coding(o.get("code"), JLAC10)
                        .and_then(checkup_field)
                        .expect("grouped by field");
                    if let Some(v) = o.get("valueQuantity").and_then(|q| q.get("value")) {
                        payload.insert(field.into(), v.clone());
                    }
                }
                let occurred = r.get("effectiveDateTime").and_then(Value::as_str);
                out.push((
                    i,
                    finish(
                        i,
                        rt,
                        "Checkup",
                        r,
                        "checkup",
                        occurred,
                        Value::Object(payload),
                        &patients,
                        facility.as_deref(),
                        coverage.as_ref(),
                        hub_prefecture,
                    ),
                ));
            }
            continue;
        }
        out.push((
            i,
            map_one(
                i,
                rt,
                r,
                &patients,
                facility.as_deref(),
                coverage.as_ref(),
                hub_prefecture,
            ),
        ));
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn map_one(
    i: usize,
    rt: &str,
    r: &Value,
    patients: &[&Value],
    facility: Option<&str>,
    coverage: Option<&Value>,
    hub: &str,
) -> Mapped {
    let unmappable = |expected: &str, found: &str| Err(reject(i, rt, expected, found));
    let (event_type, occurred, payload) = match rt {
        "Encounter" => {
            let class = match str_at(r, &["class", "code"]) {
                Some("AMB") => "outpatient",
                Some("IMP") => "inpatient",
                Some("EMER") => "emergency",
                Some("HH") => "home_visit",
                _ => return unmappable("class AMB, IMP, EMER or HH", "another or none"),
            };
            let mut p = json!({
                "encounter_id": r.get("id").and_then(Value::as_str).unwrap_or_default(),
                "encounter_class": class,
            });
            if let Some(end) = str_at(r, &["period", "end"]) {
                p["ended_at"] = end.into();
            }
            ("encounter", str_at(r, &["period", "start"]), p)
        }
        "Condition" => {
            let Some(icd) = coding(r.get("code"), ICD10) else {
                return unmappable("a code in ICD-10", "none");
            };
            let mut p = json!({
                "icd10_code": icd,
                "is_suspected": coding(r.get("verificationStatus"), "http://terminology.hl7.org/CodeSystem/condition-ver-status") == Some("provisional"),
                "outcome": match coding(r.get("clinicalStatus"), "http://terminology.hl7.org/CodeSystem/condition-clinical") {
                    Some("resolved") | Some("remission") => "cured",
                    _ => "continuing",
                },
            });
            if let Some(m) = coding(r.get("code"), MEDIS) {
                p["medis_disease_code"] = m.into();
            }
            if let Some(d) = display(r.get("code")) {
                p["disease_name"] = d.into();
            }
            if let Some(o) = r.get("onsetDateTime").and_then(Value::as_str) {
                p["onset_date"] = o.get(..10).unwrap_or(o).into();
            }
            (
                "diagnosis",
                r.get("recordedDate").and_then(Value::as_str),
                p,
            )
        }
        "Observation" => {
            let lab = r
                .get("category")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        coding(
                            Some(c),
                            "http://terminology.hl7.org/CodeSystem/observation-category",
                        ) == Some("laboratory")
                    })
                });
            if !lab {
                return unmappable(
                    "an Observation of category laboratory, or exam with a 特定健診 item code",
                    "another category",
                );
            }
            let Some(code) = coding(r.get("code"), JLAC10) else {
                return unmappable("a code in JLAC10", "none");
            };
            let mut p = json!({"jlac10_code": code, "test_name": display(r.get("code")).unwrap_or_else(|| code.to_owned())});
            if let Some(q) = r.get("valueQuantity") {
                if let Some(v) = q.get("value") {
                    p["value_numeric"] = v.clone();
                }
                if let Some(u) = q.get("unit").and_then(Value::as_str) {
                    p["unit"] = u.into();
                }
            } else if let Some(s) = r.get("valueString").and_then(Value::as_str) {
                p["value_text"] = s.into();
            }
            if let Some(rr) = r
                .get("referenceRange")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
            {
                if let Some(v) = rr.get("low").and_then(|l| l.get("value")) {
                    p["reference_low"] = v.clone();
                }
                if let Some(v) = rr.get("high").and_then(|l| l.get("value")) {
                    p["reference_high"] = v.clone();
                }
            }
            (
                "lab_result",
                r.get("effectiveDateTime").and_then(Value::as_str),
                p,
            )
        }
        "MedicationRequest" => {
            let Some(yj) = coding(r.get("medicationCodeableConcept"), YJ) else {
                return unmappable("a medication coded in YJ", "none");
            };
            let mut p = json!({"yj_code": yj, "route": "oral"});
            if let Some(d) = display(r.get("medicationCodeableConcept")) {
                p["drug_name"] = d.into();
            }
            if let Some(days) = r
                .get("dispenseRequest")
                .and_then(|d| d.get("expectedSupplyDuration"))
                .and_then(|d| d.get("value"))
                .and_then(Value::as_i64)
            {
                p["days_supply"] = days.into();
            }
            (
                "prescription",
                r.get("authoredOn").and_then(Value::as_str),
                p,
            )
        }
        "Immunization" => {
            let Some(code) = coding(r.get("vaccineCode"), YJ) else {
                return unmappable("a vaccineCode in YJ", "none");
            };
            let mut p = json!({"vaccine_code": code});
            if let Some(d) = display(r.get("vaccineCode")) {
                p["vaccine_name"] = d.into();
            }
            if let Some(l) = r.get("lotNumber").and_then(Value::as_str) {
                p["lot_number"] = l.into();
            }
            if let Some(n) = r
                .get("protocolApplied")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(|a| a.get("doseNumberPositiveInt"))
            {
                p["dose_number"] = n.clone();
            }
            (
                "vaccination",
                r.get("occurrenceDateTime").and_then(Value::as_str),
                p,
            )
        }
        _ => {
            return unmappable(
                "Encounter, Condition, Observation, MedicationRequest or Immunization",
                "another resource type",
            );
        }
    };
    finish(
        i, rt, rt, r, event_type, occurred, payload, patients, facility, coverage, hub,
    )
}

/// Assembles an event around a payload: identity, facility, times.
#[allow(clippy::too_many_arguments)]
fn finish(
    i: usize,
    rt: &str,
    id_prefix: &str,
    r: &Value,
    event_type: &str,
    occurred: Option<&str>,
    payload: Value,
    patients: &[&Value],
    facility: Option<&str>,
    coverage: Option<&Value>,
    hub: &str,
) -> Mapped {
    let unmappable = |expected: &str, found: &str| Err(reject(i, rt, expected, found));
    let Some(occurred) = occurred else {
        return unmappable("the resource's date and time", "none");
    };
    // A date without a time (FHIR allows it) is taken as midnight JST.
    let occurred = if occurred.len() == 10 {
        format!("{occurred}T00:00:00+09:00")
    } else {
        occurred.to_owned()
    };
    let subject =
        str_at(r, &["subject", "reference"]).or_else(|| str_at(r, &["patient", "reference"]));
    let patient = match (subject, patients) {
        (Some(s), ps) => ps.iter().find(|p| {
            p.get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| s.ends_with(&format!("Patient/{id}")) || s.ends_with(id))
        }),
        (None, [only]) => Some(only),
        _ => None,
    };
    let Some(patient) = patient else {
        return unmappable("a subject that is a Patient in the bundle", "none");
    };
    let mut identity = match patient_identity(patient) {
        Ok(v) => v,
        Err((expected, found)) => return Err(reject(i, "Patient", expected, found)),
    };
    if let Some(c) = coverage {
        identity["insurance"] = c.clone();
    }
    let Some(facility) = facility else {
        return unmappable(
            "an Organization with a medical institution number in the bundle",
            "none",
        );
    };
    let id = r.get("id").and_then(Value::as_str).unwrap_or_default();
    Ok(json!({
        "event_id": format!("fhir-{id_prefix}-{id}"),
        "event_type": event_type,
        "hub_prefecture": hub,
        "facility_code": facility,
        "occurred_at": occurred,
        "recorded_at": occurred,
        "source_format": "fhir",
        "patient": identity,
        "payload": payload,
    }))
}
