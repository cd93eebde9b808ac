//! Pseudonyms' text form: RFC 4648 base32, lower case, no padding. The
//! transform writes pseudonyms with it and a release re-keys them with it;
//! one definition keeps both the same shape.

const B32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// RFC 4648 base32, lower case, no padding.
pub fn encode(data: &[u8], out: &mut String) {
    // Five bytes make eight characters: whole groups through a stack buffer
    // (one append per group, not one per character; every record's
    // pseudonyms pass here).
    let mut chunks = data.chunks_exact(5);
    for c in &mut chunks {
        let v = c.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b));
        let mut buf = [0u8; 8];
        for (i, o) in buf.iter_mut().enumerate() {
            *o = B32[((v >> (35 - 5 * i)) & 31) as usize];
        }
        out.push_str(std::str::from_utf8(&buf).expect("base32 alphabet is ASCII"));
    }
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in chunks.remainder() {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(B32[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(B32[((acc << (5 - bits)) & 31) as usize] as char);
    }
}
