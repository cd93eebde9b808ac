//! What a rejected record looks like in `rejects/`: the line, with the
//! offending value masked and every My Number withheld, so a file kept for
//! the hub's operator to fix never stores what the pipeline refused to
//! carry (DESIGN.md: a My Number must never enter). The mask names the
//! shape of what was there, as error messages do.

use chitose_schemas::json::{JsonError, RejectReason, shape};
use chitose_schemas::mynumber::contains_my_number;
use serde_json::Value;

/// The stand-in for a withheld My Number.
pub const MY_NUMBER_MASK: &str = "<withheld: a My Number>";

/// The record as it may be kept: parsed, the field the error names masked
/// (its shape kept), every string holding a My Number withheld. A line that
/// is not JSON is kept as text unless it holds a My Number.
pub fn masked_record(line: &[u8], err: &JsonError) -> Value {
    let text = String::from_utf8_lossy(line);
    let Ok(mut v) = serde_json::from_str::<Value>(&text) else {
        if contains_my_number(&text) {
            return Value::String(format!("{MY_NUMBER_MASK} (the line is not JSON)"));
        }
        return Value::String(text.into_owned());
    };
    if err.path != "$"
        && let Some(slot) = pointer_mut(&mut v, &err.path)
        && !slot.is_null()
    {
        let what = if err.reason == RejectReason::MyNumber {
            MY_NUMBER_MASK.to_owned()
        } else {
            format!("<masked: {}>", shape(slot))
        };
        *slot = Value::String(what);
    }
    withhold_my_numbers(&mut v);
    v
}

/// The value at a dotted path such as `payload.jlac10_code`.
fn pointer_mut<'a>(v: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut cur = v;
    for part in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get_mut(part)?,
            Value::Array(a) => a.get_mut(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn withhold_my_numbers(v: &mut Value) {
    match v {
        Value::String(s) if contains_my_number(s) => *s = MY_NUMBER_MASK.to_owned(),
        Value::Array(a) => a.iter_mut().for_each(withhold_my_numbers),
        Value::Object(m) => {
            // A key can hold one as well (an unknown field named by it).
            let keys: Vec<String> = m
                .keys()
                .filter(|k| contains_my_number(k))
                .cloned()
                .collect();
            for k in keys {
                if let Some(x) = m.remove(&k) {
                    m.insert(MY_NUMBER_MASK.to_owned(), x);
                }
            }
            m.values_mut().for_each(withhold_my_numbers);
        }
        _ => {}
    }
}

/// Deletes files in `dir` last modified more than `days` ago (retention
/// of `done/` and `rejects/`); returns how many. 0 days keeps everything.
pub fn prune(dir: &std::path::Path, days: u32) -> std::io::Result<usize> {
    if days == 0 {
        return Ok(0);
    }
    let max_age = std::time::Duration::from_secs(u64::from(days) * 86_400);
    let now = std::time::SystemTime::now();
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let meta = e.metadata()?;
        if !meta.is_file() {
            continue;
        }
        let old = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age > max_age);
        if old {
            std::fs::remove_file(e.path())?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(path: &str, reason: RejectReason) -> JsonError {
        JsonError {
            path: path.into(),
            expected: "x".into(),
            found: "y".into(),
            reason,
        }
    }

    #[test]
    fn the_offending_value_is_masked_and_no_my_number_is_kept() {
        let mn = chitose_schemas::mynumber::complete(&[2, 7, 1, 8, 2, 8, 1, 8, 2, 8, 4]);
        let printed = format!("{}.{}.{}", &mn[..4], &mn[4..8], &mn[8..]);
        let line = format!(
            r#"{{"event_id":"e1","payload":{{"comment":"番号 {printed}","jlac10_code":"BAD"}},"patient":{{"phone":"06-1234-5678 {mn}"}}}}"#
        );
        let v = masked_record(
            line.as_bytes(),
            &err("payload.comment", RejectReason::MyNumber),
        );
        let text = v.to_string();
        assert!(!text.contains(&mn) && !text.contains(&printed), "{text}");
        assert_eq!(v["payload"]["comment"], MY_NUMBER_MASK);
        // Another field holding one (not the one the error named) too.
        assert_eq!(v["patient"]["phone"], MY_NUMBER_MASK);
        assert_eq!(v["event_id"], "e1");
        let v = masked_record(
            line.as_bytes(),
            &err("payload.jlac10_code", RejectReason::InvalidCode),
        );
        assert_eq!(
            v["payload"]["jlac10_code"],
            "<masked: a string of 3 characters>"
        );
        // Not JSON, with a My Number: withheld whole.
        let v = masked_record(
            format!("{{broken {mn}").as_bytes(),
            &err("$", RejectReason::Malformed),
        );
        assert!(!v.to_string().contains(&mn));
        let v = masked_record(b"{broken", &err("$", RejectReason::Malformed));
        assert_eq!(v, "{broken");
    }

    #[test]
    fn prune_keeps_recent_files_and_zero_keeps_all() {
        let dir = std::env::temp_dir().join(format!("chitose-prune-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = dir.join("old.ndjson");
        let new = dir.join("new.ndjson");
        std::fs::write(&old, "x").unwrap();
        std::fs::write(&new, "y").unwrap();
        let f = std::fs::File::options().write(true).open(&old).unwrap();
        f.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(40 * 86_400))
            .unwrap();
        assert_eq!(prune(&dir, 0).unwrap(), 0);
        assert_eq!(prune(&dir, 30).unwrap(), 1);
        assert!(!old.exists() && new.exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
