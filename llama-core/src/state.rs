//! Framing for saved states: llama.cpp restores whatever bytes it is given
//! (a malformed state is a heap overflow, CVE-2026-43629), so we only hand
//! it states this library produced, for the same model, uncorrupted.

use crate::{Error, Result, SeqId};

const MAGIC: &[u8; 8] = b"LLRSST01";
const HEADER: usize = 8 + 8 + 4 + 8 + 8;

fn checksum(data: &[u8]) -> u64 {
    // FNV-1a: detects corruption and truncation; not a MAC.
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Prefix `data` with magic, model fingerprint, kind, length and checksum.
pub(crate) fn seal(model: u64, seq: SeqId, data: Vec<u8>) -> Vec<u8> {
    let kind: i32 = if seq < 0 { -1 } else { 0 };
    let mut out = Vec::with_capacity(HEADER + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&model.to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(&checksum(&data).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

/// Verify and strip the framing; `seq < 0` expects a whole-context state.
pub(crate) fn open(bytes: &[u8], model: u64, seq: SeqId) -> Result<&[u8]> {
    let bad = |why: &str| Err(Error::State(why.to_string()));
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return bad("not a state written by llama-core");
    }
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap_or([0; 8]));
    let kind = i32::from_le_bytes(bytes[16..20].try_into().unwrap_or([0; 4]));
    if u64_at(8) != model {
        return bad("state belongs to another model");
    }
    if (kind < 0) != (seq < 0) {
        return bad(if seq < 0 { "this is a sequence state, not a context state" } else { "this is a context state" });
    }
    let data = &bytes[HEADER..];
    if u64_at(20) != data.len() as u64 {
        return bad("state is truncated or has trailing bytes");
    }
    if u64_at(28) != checksum(data) {
        return bad("state checksum mismatch (corrupted)");
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_tamper() {
        let sealed = seal(7, 0, b"hello".to_vec());
        assert_eq!(open(&sealed, 7, 3).unwrap(), b"hello");
        assert!(open(&sealed, 8, 3).is_err());
        assert!(open(&sealed, 7, -1).is_err());
        let mut t = sealed.clone();
        *t.last_mut().unwrap() ^= 1;
        assert!(open(&t, 7, 0).is_err());
        assert!(open(&sealed[..sealed.len() - 1], 7, 0).is_err());
        assert!(open(b"", 7, 0).is_err());
    }
}
