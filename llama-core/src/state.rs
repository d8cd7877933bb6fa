//! Framing for saved states. llama.cpp restores whatever bytes it is given
//! (a malformed state is a heap overflow, CVE-2026-43629), so we hand it
//! only states that carry a valid HMAC-SHA256 tag under a secret key: by
//! default a key drawn from the OS at random once per process (so only
//! states this process wrote in this run are accepted), or a [`StateKey`]
//! the caller supplies for states kept across runs. A checksum would not
//! do: anyone can compute one over a forged state.
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{Error, Result, SeqId};

const MAGIC: &[u8; 8] = b"LLRSST02";
const TAG: usize = 32;
/// magic, model fingerprint, kind, payload length, tag.
const HEADER: usize = 8 + 8 + 4 + 8 + TAG;

/// A secret key that authenticates saved states (HMAC-SHA256).
///
/// A [`Context`](crate::Context) signs the states it saves and refuses to
/// restore any state whose tag does not verify under its key. Without
/// [`Context::set_state_key`](crate::Context::set_state_key) the key is a
/// random one drawn once per process; set your own to restore states in a
/// later run, and keep it as secret as you would keep the right to write
/// into this process's memory: whoever holds it can make llama.cpp read a
/// forged state.
#[derive(Clone, PartialEq, Eq)]
pub struct StateKey([u8; 32]);

impl StateKey {
    /// A key from 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> StateKey {
        StateKey(bytes)
    }

    /// A fresh random key from the operating system.
    ///
    /// # Errors
    /// [`Error::State`] if the OS random source fails.
    pub fn generate() -> Result<StateKey> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| Error::State(format!("no OS randomness for a state key: {e}")))?;
        Ok(StateKey(k))
    }

    /// The key bytes (to store it somewhere safe).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The per-process key contexts use by default.
    pub(crate) fn process() -> Result<&'static StateKey> {
        static KEY: OnceLock<StateKey> = OnceLock::new();
        if let Some(k) = KEY.get() {
            return Ok(k);
        }
        let k = StateKey::generate()?;
        Ok(KEY.get_or_init(|| k))
    }
}

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateKey(<secret>)")
    }
}

fn tag(key: &StateKey, header: &[u8], data: &[u8]) -> [u8; TAG] {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail here.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.0).unwrap_or_else(|_| unreachable!());
    mac.update(header);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Prefix `data` with magic, model fingerprint, kind, length and tag.
pub(crate) fn seal(key: &StateKey, model: u64, seq: SeqId, data: Vec<u8>) -> Vec<u8> {
    let kind: i32 = if seq < 0 { -1 } else { 0 };
    let mut out = Vec::with_capacity(HEADER + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&model.to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let t = tag(key, &out, &data);
    out.extend_from_slice(&t);
    out.extend_from_slice(&data);
    out
}

/// Verify and strip the framing; `seq < 0` expects a whole-context state.
pub(crate) fn open<'a>(key: &StateKey, bytes: &'a [u8], model: u64, seq: SeqId) -> Result<&'a [u8]> {
    let bad = |why: &str| Err(Error::State(why.to_string()));
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return bad("not a state written by llama-core (or by an older version)");
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
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key.0).unwrap_or_else(|_| unreachable!());
    mac.update(&bytes[..HEADER - TAG]);
    mac.update(data);
    // Constant-time comparison.
    if mac.verify_slice(&bytes[HEADER - TAG..HEADER]).is_err() {
        return bad("state authentication failed (corrupted, forged, or saved under another key)");
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_tamper() {
        let k = StateKey::from_bytes([7; 32]);
        let sealed = seal(&k, 7, 0, b"hello".to_vec());
        assert_eq!(open(&k, &sealed, 7, 3).unwrap(), b"hello");
        assert!(open(&k, &sealed, 8, 3).is_err());
        assert!(open(&k, &sealed, 7, -1).is_err());
        let mut t = sealed.clone();
        *t.last_mut().unwrap() ^= 1;
        assert!(open(&k, &t, 7, 0).is_err());
        assert!(open(&k, &sealed[..sealed.len() - 1], 7, 0).is_err());
        assert!(open(&k, b"", 7, 0).is_err());
    }

    #[test]
    fn a_forged_state_with_a_recomputed_checksum_is_refused() {
        // What an attacker can do without the key: change the payload and
        // recompute every public field (the old framing's FNV checksum).
        let k = StateKey::from_bytes([1; 32]);
        let mut forged = seal(&k, 7, -1, b"evil".to_vec());
        let other = seal(&StateKey::from_bytes([2; 32]), 7, -1, b"evil".to_vec());
        assert!(open(&k, &other, 7, -1).is_err(), "another key's tag must not verify");
        forged[HEADER] ^= 0xff;
        assert!(open(&k, &forged, 7, -1).is_err());
    }

    #[test]
    fn process_key_is_stable() {
        assert_eq!(StateKey::process().unwrap(), StateKey::process().unwrap());
        assert_ne!(StateKey::generate().unwrap(), StateKey::generate().unwrap());
    }
}
