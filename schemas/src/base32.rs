//! Pseudonyms' text form: RFC 4648 base32, lower case, no padding. The
//! transform writes pseudonyms with it and a release re-keys them with it;
//! one definition keeps both the same shape.
//!
//! Encoded by `data-encoding` (no dependencies of its own; the tests'
//! certificate parser already used it) with a lower-case alphabet: every
//! record's pseudonyms pass here, and it appends a whole encoding in one
//! write where the hand-written encoder it replaced checked each group of
//! eight characters as UTF-8.

use std::sync::LazyLock;

static LOWER_NOPAD: LazyLock<data_encoding::Encoding> = LazyLock::new(|| {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("abcdefghijklmnopqrstuvwxyz234567");
    spec.encoding()
        .expect("32 distinct ASCII symbols make a base32")
});

/// RFC 4648 base32, lower case, no padding.
pub fn encode(data: &[u8], out: &mut String) {
    LOWER_NOPAD.encode_append(data, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4648 §10's vectors, lower-cased and without padding.
    #[test]
    fn rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
            ("foobarfooba", "mzxw6ytbojtg633cme"),
        ] {
            let mut out = String::from("x");
            encode(input.as_bytes(), &mut out);
            assert_eq!(out, format!("x{want}"), "{input:?}");
        }
    }
}
