//! Linkage keys, pseudonyms and the per-patient date shift (DESIGN.md,
//! "Pseudonyms, linkage, dates").
//!
//! The same person seen by two hubs must get the same linkage key however
//! each hub typed the identifiers, so every part is normalized first: NFKC
//! (full-width digits and half-width kana become canonical), then spaces,
//! hyphens and dots are removed; kana are folded to katakana.

use crate::keys::KeyRing;
use crate::policy::Basis;
use chitose_schemas::raw::{RawEvent, Sex};
use unicode_normalization::UnicodeNormalization;

fn is_noise(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '-' | '‐' | '‑' | '‒' | '–' | '—' | '―' | '−' | 'ー' | '・' | '.' | '･'
        )
}

/// Whether NFKC can change `c`, alone or by composing with a neighbour
/// (a conservative superset, checked exhaustively over the BMP by a test):
/// everything non-ASCII below U+3000 (Latin-1, combining marks, jamo,
/// punctuation, letterlike and enclosed forms), CJK symbols, voiced-sound
/// marks, Kanbun and squared CJK, compatibility ideographs, half- and
/// full-width forms, and everything beyond the BMP. Plain kanji, hiragana,
/// katakana and ASCII are NFKC-stable, and they are nearly all of what hubs
/// send: the hot path skips the normalizer for them (it was half of the
/// transform's time).
fn nfkc_may_change(c: char) -> bool {
    matches!(c as u32,
        0x80..=0x2FFF
        | 0x3001..=0x303F
        | 0x3099..=0x309F
        | 0x30FF..=0x319F
        | 0x3200..=0x33FF
        | 0xA000..=0xABFF
        | 0xF900..=0xFFFF
        | 0x10000..)
}

fn for_each_nfkc(s: &str, mut f: impl FnMut(char)) {
    if s.chars().any(nfkc_may_change) {
        s.nfkc().for_each(f);
    } else {
        // U+3000 (ideographic space) is NFKC ' '.
        s.chars()
            .map(|c| if c == '\u{3000}' { ' ' } else { c })
            .for_each(&mut f);
    }
}

/// NFKC, noise removed, ASCII upper-cased.
pub fn normalize_id(s: &str, out: &mut String) {
    normalize_id_to(s, out).expect("a String takes any text");
}

/// [`normalize_id`] into any writer (a fixed buffer fails when full).
pub fn normalize_id_to<W: std::fmt::Write>(s: &str, out: &mut W) -> std::fmt::Result {
    if s.is_ascii() {
        // Most ids are ASCII, which NFKC leaves alone: bytes, not chars
        // (the same result, checked by a test).
        for c in s.bytes().map(char::from) {
            if !is_noise(c) {
                out.write_char(c.to_ascii_uppercase())?;
            }
        }
        return Ok(());
    }
    let mut r = Ok(());
    for_each_nfkc(s, |c| {
        if r.is_ok() {
            r = id_char(c, out);
        }
    });
    r
}

fn id_char<W: std::fmt::Write>(c: char, out: &mut W) -> std::fmt::Result {
    if is_noise(c) {
        return Ok(());
    }
    out.write_char(c.to_ascii_uppercase())
}

/// NFKC, hiragana folded to katakana, spaces and middle dots removed. The
/// long-vowel mark is kept: it is part of a name (ユーコ), not a separator.
pub fn normalize_kana(s: &str, out: &mut String) {
    if s.is_ascii() {
        out.extend(s.bytes().map(char::from).filter(|c| !c.is_whitespace()));
        return;
    }
    for_each_nfkc(s, |c| kana_char(c, out));
}

fn kana_char(c: char, out: &mut String) {
    if c.is_whitespace() || c == '・' {
        return;
    }
    out.push(match c {
        'ぁ'..='ゖ' => char::from_u32(c as u32 + 0x60).unwrap_or(c),
        c => c,
    });
}

/// Appends one part of a linkage key: its byte length, a colon, the part,
/// normalized by `norm`. Length-prefixed, so no input can move a boundary
/// (with a separator, `"A␟B" + "C"` and `"A" + "B␟C"` were one key).
/// Returns whether the part was non-empty.
fn part(out: &mut String, norm: impl FnOnce(&mut String)) -> bool {
    let at = out.len();
    norm(out);
    let len = out.len() - at;
    // The prefix is written in place (no allocation on the hot path).
    let mut buf = [b':'; 21];
    let (mut i, mut n) = (20, len);
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.insert_str(at, std::str::from_utf8(&buf[i..]).expect("ASCII digits"));
    len > 0
}

/// Builds the linkage key of basis `b` into `out` (`v2/<basis>` then the
/// basis's parts, each length-prefixed); false when the record's inputs do
/// not allow the basis.
pub fn basis_key(ev: &RawEvent, b: Basis, out: &mut String) -> bool {
    out.clear();
    out.push_str("v2/");
    out.push_str(b.name());
    out.push('/');
    match b {
        // The insurance tuple names a person only with its 枝番: without
        // the branch number it names a family (every dependant of one
        // insured person), so the basis falls through.
        Basis::Insurance => match &ev.patient.insurance {
            Some(i) => {
                let insurer_ok = part(out, |o| normalize_id(&i.insurer_number, o));
                part(out, |o| {
                    normalize_id(i.insured_symbol.as_deref().unwrap_or(""), o)
                });
                let number_ok = part(out, |o| normalize_id(&i.insured_number, o));
                let branch_ok = part(out, |o| {
                    normalize_id(i.insured_branch.as_deref().unwrap_or(""), o)
                });
                insurer_ok && number_ok && branch_ok
            }
            None => false,
        },
        Basis::KanaBirthSex => match &ev.patient.name_kana {
            Some(k) if ev.patient.sex != Sex::Unknown => {
                let kana_ok = part(out, |o| normalize_kana(k, o));
                part(out, |o| {
                    use std::fmt::Write;
                    write!(o, "{}", ev.patient.birth_date.0).expect("a String takes any text")
                });
                part(out, |o| o.push_str(ev.patient.sex.symbol()));
                kana_ok
            }
            _ => false,
        },
        Basis::HubLocal => {
            part(out, |o| normalize_id(&ev.facility_code, o));
            part(out, |o| normalize_id(&ev.patient.local_patient_id, o));
            true
        }
    }
}

/// Builds the linkage key of the first applicable basis into `out`.
pub fn linkage_key(ev: &RawEvent, bases: &[Basis], out: &mut String) -> Basis {
    for &b in bases {
        if basis_key(ev, b, out) {
            return b;
        }
    }
    // Policies must end with hub_local (checked at load), which always applies.
    unreachable!("hub_local is the last basis of every policy")
}

/// The pseudonyms of every basis in `bases` the record allows, under every
/// pseudonym key of the ring (the current one and those kept loaded for a
/// rotation), sorted, deduplicated and space-separated into `out`.
///
/// One person reaches the lake under several pseudonyms — a feed without
/// insurance falls back to another basis, an insurance change (the move to
/// 後期高齢者医療 at 75) makes a new insurance key, a rotation a new key —
/// and a release that counted pseudonyms would count that person several
/// times. Any two records of one person that share a basis (or a key era)
/// share one of these values, so the release can join them (union–find)
/// without ever seeing an input. `primary` is the basis that made the
/// record's pseudonym, its linkage key and its HMAC under the current key:
/// the bases before it in the policy did not apply, and its own values are
/// not made twice. `key` and `macs` are buffers (no allocation per record
/// once they have grown).
pub fn linkage_pseudonyms(
    keys: &KeyRing,
    ev: &RawEvent,
    bases: &[Basis],
    primary: (Basis, &str, [u8; 32]),
    (key, macs): (&mut String, &mut Vec<[u8; 32]>),
    out: &mut String,
) {
    out.clear();
    macs.clear();
    let (first, primary_key, primary_mac) = primary;
    let from = bases.iter().position(|b| *b == first).unwrap_or(0);
    for &b in &bases[from..] {
        if b == first {
            macs.push(primary_mac);
            keys.pseudonym_macs(&[primary_key.as_bytes()], false, macs);
        } else if basis_key(ev, b, key) {
            keys.pseudonym_macs(&[key.as_bytes()], true, macs);
        }
    }
    macs.sort_unstable();
    macs.dedup();
    for m in macs.iter() {
        if !out.is_empty() {
            out.push(' ');
        }
        base32(m, out);
    }
}

/// Whether the record had an insurance tuple that could not be used because
/// its 枝番 is missing (counted, so a hub that never sends it is noticed).
pub fn insurance_without_branch(ev: &RawEvent) -> bool {
    ev.patient.insurance.as_ref().is_some_and(|i| {
        let mut b = String::new();
        normalize_id(i.insured_branch.as_deref().unwrap_or(""), &mut b);
        b.is_empty()
    })
}

/// RFC 4648 base32, lower case, no padding (one definition, shared with
/// the release's re-keyed pseudonyms).
pub use chitose_schemas::base32::encode as base32;

/// The pseudonym of a linkage key under the ring's current key.
/// Returns the HMAC itself as well (the record's linkage pseudonyms reuse
/// it).
pub fn pseudonym(keys: &KeyRing, linkage_key: &str, out: &mut String) -> [u8; 32] {
    out.clear();
    let mac = keys.mac_current(&[linkage_key.as_bytes()]);
    base32(&mac, out);
    mac
}

/// Domain tag of the date shift's HMAC input.
const DATE_SHIFT_TAG: &[u8] = b"chitose/date-shift/v1\0";
/// Domain tag of the event id's HMAC input.
const EVENT_ID_TAG: &[u8] = b"chitose/event-id/v1\0";

/// offset = HMAC(K_date, tag ‖ linkage key) mod (2R+1) − R days: one per
/// patient, the same for every record of that patient. The input is the
/// secret linkage key, not the pseudonym: the pseudonym is in every row, so
/// a leaked date key alone would otherwise undo every shift; and rotating
/// the pseudonym key leaves the offsets as they were.
pub fn date_shift_days(keys: &KeyRing, linkage_key: &str, max_days: u32) -> i32 {
    if max_days == 0 {
        return 0;
    }
    let mac = keys
        .mac_date(&[DATE_SHIFT_TAG, linkage_key.as_bytes()])
        .expect("date key checked at load when the profile shifts");
    let v = u64::from_be_bytes(mac[..8].try_into().expect("8 bytes"));
    let span = 2 * u64::from(max_days) + 1;
    (v % span) as i32 - max_days as i32
}

/// The event id as it leaves the transform: base32 of 160 bits of
/// HMAC(K_event, tag ‖ hub prefecture ‖ facility ‖ event id), parts
/// length-prefixed. A retry of one record gets the same value, so
/// duplicates can still be found; the hub's own id (a FHIR resource id, a
/// hospital's record number) cannot be joined back without the key.
pub fn event_id(keys: &KeyRing, ev: &RawEvent, out: &mut String) {
    event_id_of(
        keys,
        &ev.hub_prefecture,
        &ev.facility_code,
        &ev.event_id,
        out,
    );
}

/// [`event_id`] from its parts (for tools and tests that hold the key).
pub fn event_id_of(keys: &KeyRing, hub: &str, facility: &str, id: &str, out: &mut String) {
    out.clear();
    let lp = |s: &str| (s.len() as u32).to_be_bytes();
    let (a, b, c) = (lp(hub), lp(facility), lp(id));
    let mac = keys.mac_event(&[
        EVENT_ID_TAG,
        &a,
        hub.as_bytes(),
        &b,
        facility.as_bytes(),
        &c,
        id.as_bytes(),
    ]);
    base32(&mac[..20], out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_typed_differently_normalize_alike() {
        let mut a = String::new();
        let mut b = String::new();
        normalize_id("０６２７ー１２３４ ５", &mut a);
        normalize_id("0627-12345", &mut b);
        assert_eq!(a, b);
        let (mut k1, mut k2, mut k3) = (String::new(), String::new(), String::new());
        normalize_kana("ヤマダ　タロウ", &mut k1);
        normalize_kana("ﾔﾏﾀﾞ ﾀﾛｳ", &mut k2);
        normalize_kana("やまだ たろう", &mut k3);
        assert_eq!(k1, "ヤマダタロウ");
        assert_eq!(k1, k2);
        assert_eq!(k1, k3);
    }

    #[test]
    fn the_ascii_path_agrees_with_the_general_one_on_every_ascii_byte() {
        for b in 0u8..0x80 {
            let s = format!("a{}Z-{}.9", char::from(b), char::from(b));
            let (mut fast, mut slow) = (String::new(), String::new());
            normalize_id(&s, &mut fast);
            for_each_nfkc(&s, |c| id_char(c, &mut slow).unwrap());
            assert_eq!(fast, slow, "id, byte {b:#04x}");
            let (mut fast, mut slow) = (String::new(), String::new());
            normalize_kana(&s, &mut fast);
            for_each_nfkc(&s, |c| kana_char(c, &mut slow));
            assert_eq!(fast, slow, "kana, byte {b:#04x}");
        }
    }

    #[test]
    fn the_fast_path_agrees_with_nfkc_on_every_bmp_character() {
        for cp in 0..0x10000u32 {
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            if !nfkc_may_change(c) {
                let n: String = c.to_string().nfkc().collect();
                let fast: String = c
                    .to_string()
                    .chars()
                    .map(|c| if c == '\u{3000}' { ' ' } else { c })
                    .collect();
                assert_eq!(n, fast, "U+{cp:04X} changes under NFKC");
            }
        }
    }

    #[test]
    fn linkage_parts_cannot_move_their_boundaries() {
        let mut a = String::new();
        let mut b = String::new();
        part(&mut a, |o| o.push_str("AB"));
        part(&mut a, |o| o.push('C'));
        part(&mut b, |o| o.push('A'));
        part(&mut b, |o| o.push_str("BC"));
        assert_eq!(a, "2:AB1:C");
        assert_ne!(a, b);
        let mut long = String::from("x/");
        part(&mut long, |o| o.push_str("ABCDEFGHIJKL"));
        part(&mut long, |o| o.push_str(""));
        assert_eq!(long, "x/12:ABCDEFGHIJKL0:");
    }
}
