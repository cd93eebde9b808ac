//! My Number (個人番号) detection. A My Number must never enter the
//! pipeline (DESIGN.md), so every string field is scanned at the edge.
//!
//! A My Number is 12 digits whose last digit is a check digit (番号法施行令
//! 第8条). We look for it as a run of exactly 12 digits, or as the printed
//! 4-4-4 form with spaces or hyphens, after NFKC so that full-width and
//! other compatibility digits (１２３…, ①) are caught too. A longer or
//! shorter digit run is not a My Number, so codes such as JLAC10 are safe.

use unicode_normalization::UnicodeNormalization;

/// Check digit for the first 11 digits (most significant first).
pub fn check_digit(first11: &[u8; 11]) -> u8 {
    // P_n is the n-th digit from the right of the 11; Q_n = n+1 (n ≤ 6),
    // n−5 (n ≥ 7).
    let sum: u32 = (1..=11)
        .map(|n| {
            let p = u32::from(first11[11 - n]);
            let q = if n <= 6 { n as u32 + 1 } else { n as u32 - 5 };
            p * q
        })
        .sum();
    let r = sum % 11;
    if r <= 1 { 0 } else { (11 - r) as u8 }
}

/// True for exactly 12 ASCII digits with a valid check digit.
pub fn is_valid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 12 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut first = [0u8; 11];
    for (i, d) in b[..11].iter().enumerate() {
        first[i] = d - b'0';
    }
    check_digit(&first) == b[11] - b'0'
}

/// Completes 11 digits into a valid My Number (for tests and bad data).
pub fn complete(first11: &[u8; 11]) -> String {
    let mut s: String = first11.iter().map(|d| char::from(b'0' + d)).collect();
    s.push(char::from(b'0' + check_digit(first11)));
    s
}

/// Whether a character may sit between the digit groups of a printed My
/// Number: anything that is neither a letter nor a digit (a space, any dash,
/// a dot, a slash, an underscore, a bracket, a symbol). Hubs and people
/// print numbers with every separator there is; a fixed list missed
/// `1234.5678.9012` and `1234/5678/9012`.
fn is_sep(c: char) -> bool {
    !c.is_alphanumeric()
}

/// True when `s` holds a My Number anywhere.
pub fn contains_my_number(s: &str) -> bool {
    if s.is_ascii() {
        // The hot path (codes, ids, numbers): bytes counted without decoding,
        // and short strings scanned from a stack buffer, not a Vec.
        if s.bytes().filter(u8::is_ascii_digit).count() < 12
            || is_uuid(s.as_bytes())
            || !has_run_of_4_or_12(s.as_bytes())
        {
            return false;
        }
        let mut buf = ['\0'; 128];
        if s.len() <= buf.len() {
            for (d, b) in buf.iter_mut().zip(s.bytes()) {
                *d = char::from(b);
            }
            return scan(&buf[..s.len()]);
        }
        return scan(&s.chars().collect::<Vec<_>>());
    }
    // Cheap exit: a string whose characters cannot make 12 digits under
    // NFKC cannot hold one.
    if s.chars().map(digits_at_most).sum::<usize>() < 12 {
        return false;
    }
    scan(&s.nfkc().collect::<Vec<_>>())
}

/// At most how many ASCII digits `c` becomes under NFKC (checked over every
/// character by a test). Kana and kanji, nearly all of Japanese text, are
/// answered without a Unicode table lookup; a numeric character or a
/// squared/enclosed form (`⑳`, `㏾` = "31日", `⒇`) two, a fraction
/// (`⅒` = "1⁄10") three. The count it replaced (numeric characters, one
/// each) let twelve digits through as six `⑳`-like characters.
fn digits_at_most(c: char) -> usize {
    match c as u32 {
        0x30..=0x39 => 1,
        0..=0x7F | 0x3040..=0x30FF | 0x4E00..=0x9FFF => 0,
        0x3200..=0x33FF | 0x1F100..=0x1F10F => 2,
        _ if c.is_numeric() => 3,
        _ => 0,
    }
}

/// What one pass over a string tells the contract's string rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prescan {
    /// A control character other than tab, line feed and carriage return.
    pub control: bool,
    /// Whether [`contains_my_number`] could answer yes (twelve digits or
    /// more, in ASCII with a run of exactly 4 or 12): only then is it asked.
    pub may_hold_my_number: bool,
}

/// [`ascii_scan`] for any string: a string that is not ASCII (names,
/// addresses, free text) is decoded once, counting the digits NFKC could
/// make of it and looking for control characters together; they were two
/// passes, and the second decoded every name again.
pub fn prescan(s: &str) -> Prescan {
    if let Some(a) = ascii_scan(s.as_bytes()) {
        return a;
    }
    let (mut digits, mut control) = (0usize, false);
    for c in s.chars() {
        digits += digits_at_most(c);
        control |= crate::json::is_forbidden_control(c);
    }
    Prescan {
        control,
        may_hold_my_number: digits >= 12,
    }
}

/// The checks [`crate::json::check_string_rules`] makes of every string,
/// in one pass over its bytes instead of five (ASCII test, digit count,
/// digit runs, ASCII test again, control characters): strings are most of
/// what the edge and the transform check. None when `b` is not ASCII.
fn ascii_scan(b: &[u8]) -> Option<Prescan> {
    let (mut digits, mut run, mut runs, mut control) = (0usize, 0usize, false, false);
    for &c in b {
        if c.is_ascii_digit() {
            digits += 1;
            run += 1;
            continue;
        }
        if c >= 0x80 {
            return None;
        }
        runs |= run == 4 || run == 12;
        run = 0;
        control |= (c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r')) || c == 0x7f;
    }
    runs |= run == 4 || run == 12;
    Some(Prescan {
        control,
        may_hold_my_number: digits >= 12 && runs,
    })
}

/// Whether `b` has a run of exactly 4 or exactly 12 ASCII digits: a My
/// Number is one 12-digit group or three 4-digit ones, so a string without
/// such a run (a JLAC10 code, a long lot number) needs no scan.
fn has_run_of_4_or_12(b: &[u8]) -> bool {
    let mut run = 0;
    for c in b.iter().chain(std::iter::once(&b' ')) {
        if c.is_ascii_digit() {
            run += 1;
        } else {
            if run == 4 || run == 12 {
                return true;
            }
            run = 0;
        }
    }
    false
}

/// Whether `b` is exactly one UUID (`8-4-4-4-12` hexadecimal): the usual
/// event id, whose digit groups are exempt (see [`uuid_spans`]), so it is
/// answered without a scan.
fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The character ranges of the UUIDs in `c` (`8-4-4-4-12` hexadecimal,
/// not inside a longer hexadecimal run): record ids whose digit groups are
/// 12 or 4-4-4 digits by chance, not written My Numbers.
fn uuid_spans(c: &[char]) -> Vec<(usize, usize)> {
    const SHAPE: [usize; 5] = [8, 4, 4, 4, 12];
    let mut spans = Vec::new();
    if c.len() < 36 {
        return spans;
    }
    for start in 0..=c.len() - 36 {
        if start > 0 && (c[start - 1].is_ascii_hexdigit() || c[start - 1] == '-') {
            continue;
        }
        let mut i = start;
        let ok = SHAPE.iter().enumerate().all(|(k, &len)| {
            let group = c[i..i + len].iter().all(char::is_ascii_hexdigit);
            i += len;
            let dash = k == 4 || c[i] == '-';
            if k < 4 {
                i += 1;
            }
            group && dash
        });
        if ok && c.get(i).is_none_or(|x| !x.is_ascii_hexdigit() && *x != '-') {
            spans.push((start, i));
        }
    }
    spans
}

/// One maximal run of ASCII digits: where it starts and how long it is.
#[derive(Clone, Copy)]
struct Group {
    start: usize,
    len: usize,
}

fn scan(c: &[char]) -> bool {
    let n = c.len();
    // Digit groups, chained when one to three separator characters stand
    // between them. Letters break a chain but do not excuse a number: a My
    // Number glued to a code (`ID123456789018`) is still one. The only
    // exemption is a UUID's last group, which is 12 digits by chance.
    let mut chain: Vec<Group> = Vec::with_capacity(8);
    // UUID spans are found once per string, and only if a candidate needs them.
    let mut uuids: Option<Vec<(usize, usize)>> = None;
    let mut i = 0;
    while i < n {
        if !c[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && c[i].is_ascii_digit() {
            i += 1;
        }
        let joined = chain.last().is_some_and(|e| {
            let gap = &c[e.start + e.len..start];
            (1..=3).contains(&gap.len()) && gap.iter().all(|&x| is_sep(x))
        });
        if !joined {
            if hit(c, &chain, &mut uuids) {
                return true;
            }
            chain.clear();
        }
        chain.push(Group {
            start,
            len: i - start,
        });
    }
    hit(c, &chain, &mut uuids)
}

/// Whether a finished chain holds a My Number: a group of 12 digits, or
/// three groups of 4 printed with one separator (`1234 5678 9012`) that is
/// not also the separator to a neighbouring group (`1234.5678.9012.1` is a
/// version, `03-1234-5678, 1234 5678 9012` still holds one).
fn hit(c: &[char], chain: &[Group], uuids: &mut Option<Vec<(usize, usize)>>) -> bool {
    let digits = |groups: &[Group]| -> String {
        groups
            .iter()
            .flat_map(|g| c[g.start..g.start + g.len].iter())
            .collect()
    };
    let gap = |a: &Group, b: &Group| &c[a.start + a.len..b.start];
    if !chain.iter().any(|g| g.len == 12 || g.len == 4) {
        return false;
    }
    let uuids = uuids.get_or_insert_with(|| uuid_spans(c));
    let in_uuid = |g: &Group| uuids.iter().any(|(a, b)| g.start >= *a && g.start < *b);
    for (k, g) in chain.iter().enumerate() {
        if in_uuid(g) {
            continue;
        }
        if g.len == 12 && is_valid(&digits(&chain[k..=k])) {
            return true;
        }
        let Some(three) = chain.get(k..k + 3) else {
            continue;
        };
        if !three.iter().all(|g| g.len == 4 && !in_uuid(g)) {
            continue;
        }
        let sep = gap(&three[0], &three[1]);
        if gap(&three[1], &three[2]) != sep {
            continue;
        }
        let before = k.checked_sub(1).map(|p| gap(&chain[p], &three[0]));
        let after = chain.get(k + 3).map(|nx| gap(&three[2], nx));
        if before == Some(sep) || after == Some(sep) {
            continue;
        }
        if is_valid(&digits(three)) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass scan against the checks it stands for, on random ASCII
    /// strings rich in digit runs, separators and control characters.
    #[test]
    fn the_one_pass_ascii_scan_agrees_with_the_checks_it_replaces() {
        // Digit runs of the lengths that matter (4 and 12, and their
        // neighbours) between short stretches of separators, letters and
        // control characters, so 4-4-4 and 12-digit forms are common.
        let others = b" -./_Aa\t\n\r\x00\x1f\x7f";
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let (mut hits, mut controls) = (0, 0);
        for _ in 0..200_000 {
            let mut s = String::new();
            for _ in 0..(1 + next() % 5) {
                let digits = [3, 4, 4, 4, 5, 11, 12, 12, 13][(next() % 9) as usize];
                for _ in 0..digits {
                    s.push(char::from(b'0' + (next() % 10) as u8));
                }
                for _ in 0..(next() % 3) {
                    s.push(char::from(others[(next() % others.len() as u64) as usize]));
                }
                // Longer stretches without a digit.
                if next().is_multiple_of(4) {
                    let fillers = [
                        "abcdefgh",
                        "Lot no. ",
                        "---------",
                        "x y z w v",
                        "\t\tAB\r\n  ",
                    ];
                    s.push_str(fillers[(next() % fillers.len() as u64) as usize]);
                }
            }
            let a = ascii_scan(s.as_bytes()).expect("ASCII");
            let (mine, control) = agrees(&s, a);
            hits += usize::from(mine);
            controls += usize::from(control);
        }
        assert!(
            hits > 100 && controls > 1000,
            "{hits} My Numbers, {controls} controls"
        );
        assert_eq!(ascii_scan("山田".as_bytes()), None);
        assert_eq!(ascii_scan(b"a\xc3\xa9"), None);
    }

    /// A small deterministic generator (xorshift64) for the property tests.
    fn xorshift(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// Holds a prescan of `s` to the checks it stands for: the same
    /// control-character answer, and never "no" where the full My Number
    /// scan says yes. Returns (My Number, control character).
    fn agrees(s: &str, a: Prescan) -> (bool, bool) {
        let control = s.chars().any(crate::json::is_forbidden_control);
        assert_eq!(a.control, control, "{s:?}");
        let mine = contains_my_number(s);
        assert!(
            !mine || a.may_hold_my_number,
            "{s:?}: a My Number it let past"
        );
        (mine, control)
    }

    /// The prescan of strings that are not ASCII against the checks it
    /// stands for: kana, kanji, full-width and circled digits, C1 controls
    /// and separators, mixed with ASCII digit runs.
    #[test]
    fn the_prescan_of_text_agrees_with_the_checks_it_replaces() {
        let pieces = [
            "山田",
            "ヤマダ",
            "たろう",
            "大阪府",
            " ",
            "-",
            "ー",
            "・",
            "\u{3000}",
            "１２３４",
            "０",
            "①",
            "⑫",
            "㉞",
            "㏾",
            "⅒",
            "\u{85}",
            "\u{9f}",
            "\t",
            "\u{7f}",
            "1234",
            "123456789012",
            "5",
            "é",
            // a valid My Number (see `sample`), written three ways
            "123456789018",
            "１２３４５６７８９０１８",
            "1234－5678－9018",
        ];
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let (mut hits, mut controls, mut maybe) = (0, 0, 0);
        for _ in 0..100_000 {
            let mut s = String::from("名");
            for _ in 0..(1 + next() % 12) {
                s.push_str(pieces[(next() % pieces.len() as u64) as usize]);
            }
            let a = prescan(&s);
            let (mine, control) = agrees(&s, a);
            hits += usize::from(mine);
            controls += usize::from(control);
            maybe += usize::from(a.may_hold_my_number);
        }
        assert!(
            hits > 100 && controls > 1000 && maybe < 100_000,
            "{hits} My Numbers, {controls} controls, {maybe} scanned"
        );
        assert!(prescan("1234\u{1}").control && !prescan("名1234\t").control);
    }

    #[test]
    fn a_my_number_in_circled_numbers_is_found() {
        // ⑫㉞㊺㉓⑪㉒-like: six characters, twelve digits under NFKC.
        let n = complete(&[1, 2, 3, 4, 4, 5, 2, 3, 1, 1, 2]);
        let circled: String = n
            .as_bytes()
            .chunks(2)
            .map(|p| {
                let v = u32::from((p[0] - b'0') * 10 + (p[1] - b'0'));
                char::from_u32(match v {
                    1..=20 => 0x2460 + v - 1,
                    21..=35 => 0x3251 + v - 21,
                    _ => 0x32B1 + v - 36,
                })
                .unwrap()
            })
            .collect();
        assert_eq!(circled.chars().count(), 6);
        assert!(
            contains_my_number(&format!("番号 {circled} です")),
            "{circled}"
        );
    }

    #[test]
    fn no_character_makes_more_digits_than_the_cheap_exit_counts() {
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            let n = c.to_string().nfkc().filter(char::is_ascii_digit).count();
            assert!(
                n <= digits_at_most(c),
                "U+{:04X} gives {n} digits under NFKC",
                c as u32
            );
        }
    }

    // 12-digit example built from the algorithm: first 11 = 12345678901.
    fn sample() -> String {
        complete(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1])
    }

    #[test]
    fn check_digit_matches_a_hand_computed_value() {
        // 1..9,0,1 from the right: P1=1,P2=0,P3=9,...; Σ P·Q = 1·2+0·3+9·4+8·5+7·6+6·7+5·2+4·3+3·4+2·5+1·6 = 212
        // 212 mod 11 = 3 → check = 8.
        assert_eq!(sample(), "123456789018");
        assert!(is_valid("123456789018"));
        assert!(!is_valid("123456789017"));
    }

    #[test]
    fn finds_it_in_every_disguise() {
        let n = sample();
        let spaced = format!("{} {} {}", &n[..4], &n[4..8], &n[8..]);
        let hyph = format!("{}-{}-{}", &n[..4], &n[4..8], &n[8..]);
        let wide: String = n
            .chars()
            .map(|c| char::from_u32(c as u32 - '0' as u32 + 0xFF10).unwrap())
            .collect();
        for s in [
            n.clone(),
            format!("番号は{n}です"),
            spaced,
            hyph,
            wide,
            format!("ﾏｲﾅﾝﾊﾞｰ：{n}"),
            format!("ID:{n}"),
            format!("({n})"),
            // Separators and neighbours a fixed list used to miss.
            format!("{}.{}.{}", &n[..4], &n[4..8], &n[8..]),
            format!("{}/{}/{}", &n[..4], &n[4..8], &n[8..]),
            format!("{}\u{2013}{}\u{2013}{}", &n[..4], &n[4..8], &n[8..]),
            format!("{}_{}_{}", &n[..4], &n[4..8], &n[8..]),
            format!("{} - {} - {}", &n[..4], &n[4..8], &n[8..]),
            format!("P{n}"),
            format!("ABC{n}XYZ"),
            format!("id_{n}"),
            format!("tel 06-1234-5678, {n}"),
            format!("fhir-Observation-{n}"),
        ] {
            assert!(
                contains_my_number(&s),
                "missed a disguise of length {}",
                s.len()
            );
        }
    }

    #[test]
    fn leaves_codes_and_phone_numbers_alone() {
        let n = sample();
        for s in [
            format!("9A979E6D-A13E-4376-1198-{n}"), // upper-case UUID
            "d4a1b2cd-1234-5678-9018-abcdef012345".to_string(), // 4-4-4 digits inside a UUID
            format!("{}.{}.{}.1", &n[..4], &n[4..8], &n[8..]), // four groups: a version, not a number
            "3D046000001906202".to_string(),                   // JLAC10
            "2171022F1020".to_string(),                        // YJ
            "090-1234-5678".to_string(),
            "2024-01-15 1234".to_string(),
            format!("{n}0"), // 13 digits
            format!("1{}", &n[..11]),
            "123456789017".to_string(),             // wrong check digit
            format!("9a979e6d-a13e-4376-1198-{n}"), // a UUID's last group
        ] {
            assert!(!contains_my_number(&s), "false positive on {s}");
        }
    }
}
