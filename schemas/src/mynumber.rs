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

fn is_sep(c: char) -> bool {
    matches!(
        c,
        ' ' | '-' | '\u{2010}' | '\u{2212}' | '\u{30FC}' | '\u{3000}'
    )
}

/// True when `s` holds a My Number anywhere.
pub fn contains_my_number(s: &str) -> bool {
    // Cheap exit: fewer than 12 digit-like characters cannot hold one.
    let digitish = s.chars().filter(|c| c.is_numeric()).count();
    if digitish < 12 {
        return false;
    }
    if s.is_ascii() {
        scan(s.chars())
    } else {
        scan(s.nfkc())
    }
}

fn scan(chars: impl Iterator<Item = char>) -> bool {
    let c: Vec<char> = chars.collect();
    let n = c.len();
    // A digit group that touches an ASCII letter (directly, or through a
    // hyphen as in a UUID's last group) is part of an identifier token, not
    // a written My Number: "…-a13e-123456789018" is someone's UUID.
    let joins = |x: char| x.is_ascii_alphabetic() || x == '_';
    let mut i = 0;
    while i < n {
        if !c[i].is_ascii_digit() || (i > 0 && c[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        let start = i;
        let mut runs: Vec<usize> = Vec::with_capacity(4);
        let mut digits = String::with_capacity(16);
        let mut run = 0;
        let mut j = i;
        while j < n {
            if c[j].is_ascii_digit() {
                digits.push(c[j]);
                run += 1;
                j += 1;
            } else if is_sep(c[j]) && j + 1 < n && c[j + 1].is_ascii_digit() {
                runs.push(run);
                run = 0;
                j += 1;
            } else {
                break;
            }
        }
        runs.push(run);
        let left = start > 0
            && (joins(c[start - 1])
                || (c[start - 1] == '-' && start > 1 && c[start - 2].is_ascii_alphanumeric()));
        let right = j < n
            && (joins(c[j]) || (c[j] == '-' && j + 1 < n && c[j + 1].is_ascii_alphanumeric()));
        let shaped = runs.as_slice() == [12] || runs.as_slice() == [4, 4, 4];
        if shaped && !left && !right && is_valid(&digits) {
            return true;
        }
        i = j.max(i + 1);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "3D046000001906202".to_string(), // JLAC10
            "2171022F1020".to_string(),      // YJ
            "090-1234-5678".to_string(),
            "2024-01-15 1234".to_string(),
            format!("{n}0"), // 13 digits
            format!("1{}", &n[..11]),
            "123456789017".to_string(),             // wrong check digit
            format!("9a979e6d-a13e-4376-1198-{n}"), // a UUID's last group
            format!("P{n}"),
        ] {
            assert!(!contains_my_number(&s), "false positive on {s}");
        }
    }
}
