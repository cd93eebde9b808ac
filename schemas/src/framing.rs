//! Message framings on the wire.
//!
//! - Avro single-object encoding (the default): `C3 01`, the 8-byte
//!   little-endian CRC-64-AVRO (Rabin) fingerprint of the writer schema's
//!   Parsing Canonical Form, then the datum.
//! - Confluent framing (with a Confluent-compatible registry): `00`, the
//!   4-byte big-endian schema id, then the datum.

/// First two bytes of a single-object encoded message.
pub const SOE_MAGIC: [u8; 2] = [0xC3, 0x01];
/// First byte of a Confluent-framed message.
pub const CONFLUENT_MAGIC: u8 = 0x00;

/// A message split into its writer-schema reference and its datum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framed<'a> {
    /// Single-object encoding.
    SingleObject {
        /// Rabin fingerprint of the writer schema.
        fingerprint: u64,
        /// The Avro datum.
        datum: &'a [u8],
    },
    /// Confluent framing.
    Confluent {
        /// Registry schema id.
        schema_id: u32,
        /// The Avro datum.
        datum: &'a [u8],
    },
}

/// Why a message could not be unframed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Shorter than any header.
    #[error("message header: expected at least {expected} bytes, found {found}")]
    TooShort {
        /// Bytes needed.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// Neither magic.
    #[error("message header: expected C3 01 (single-object) or 00 (Confluent), found {0:02X}")]
    UnknownMagic(u8),
}

/// Splits a message into header and datum.
pub fn unframe(msg: &[u8]) -> Result<Framed<'_>, FrameError> {
    match msg.first() {
        Some(0xC3) => {
            if msg.len() < 10 {
                return Err(FrameError::TooShort {
                    expected: 10,
                    found: msg.len(),
                });
            }
            if msg[1] != 0x01 {
                return Err(FrameError::UnknownMagic(msg[1]));
            }
            Ok(Framed::SingleObject {
                fingerprint: u64::from_le_bytes(msg[2..10].try_into().expect("8 bytes")),
                datum: &msg[10..],
            })
        }
        Some(&CONFLUENT_MAGIC) => {
            if msg.len() < 5 {
                return Err(FrameError::TooShort {
                    expected: 5,
                    found: msg.len(),
                });
            }
            Ok(Framed::Confluent {
                schema_id: u32::from_be_bytes(msg[1..5].try_into().expect("4 bytes")),
                datum: &msg[5..],
            })
        }
        Some(&b) => Err(FrameError::UnknownMagic(b)),
        None => Err(FrameError::TooShort {
            expected: 5,
            found: 0,
        }),
    }
}

/// Appends a single-object header.
pub fn put_soe_header(out: &mut Vec<u8>, fingerprint: u64) {
    out.extend_from_slice(&SOE_MAGIC);
    out.extend_from_slice(&fingerprint.to_le_bytes());
}

/// Appends a Confluent header.
pub fn put_confluent_header(out: &mut Vec<u8>, schema_id: u32) {
    out.push(CONFLUENT_MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

/// CRC-64-AVRO (Rabin) fingerprint, as in the Avro specification.
pub fn rabin_fingerprint(data: &[u8]) -> u64 {
    const EMPTY: u64 = 0xc15d_213a_a4d7_a795;
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut fp = i as u64;
            for _ in 0..8 {
                fp = (fp >> 1) ^ (EMPTY & (0u64.wrapping_sub(fp & 1)));
            }
            *slot = fp;
        }
        t
    });
    let mut fp = EMPTY;
    for &b in data {
        fp = (fp >> 8) ^ table[((fp ^ u64::from(b)) & 0xff) as usize];
    }
    fp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabin_matches_the_spec_for_primitive_schemas() {
        // apache-avro's own test vector: "int" → bytes 8f5c393f1ad57572 (LE).
        assert_eq!(rabin_fingerprint(b"\"int\""), 0x7275_d51a_3f39_5c8f);
    }

    #[test]
    fn frames_round_trip_and_bad_headers_are_named() {
        let mut m = Vec::new();
        put_soe_header(&mut m, 0x0102_0304_0506_0708);
        m.extend_from_slice(b"xy");
        assert_eq!(
            unframe(&m).unwrap(),
            Framed::SingleObject {
                fingerprint: 0x0102_0304_0506_0708,
                datum: b"xy"
            }
        );
        let mut c = Vec::new();
        put_confluent_header(&mut c, 42);
        c.push(7);
        assert_eq!(
            unframe(&c).unwrap(),
            Framed::Confluent {
                schema_id: 42,
                datum: &[7]
            }
        );
        assert_eq!(
            unframe(&[0xC3, 0x01, 0]).unwrap_err().to_string(),
            "message header: expected at least 10 bytes, found 3"
        );
        assert_eq!(unframe(b"{").unwrap_err(), FrameError::UnknownMagic(b'{'));
    }
}
