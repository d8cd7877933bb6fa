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

use crate::{Error, Result, Token};

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

    /// A key derived from a longer-lived `secret` for one `purpose`
    /// (HMAC-SHA256 of the purpose under the secret), so that one secret
    /// can serve several uses without one use's key opening another's
    /// states. The same secret and purpose always give the same key: keep
    /// the secret (for example a 0600 file of random bytes) to restore
    /// states across runs.
    pub fn derive(secret: &[u8], purpose: &str) -> StateKey {
        // HMAC accepts keys of any length: `new_from_slice` cannot fail here.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
        mac.update(b"llama.rs state key\0");
        mac.update(purpose.as_bytes());
        StateKey(mac.finalize().into_bytes().into())
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

/// What a sealed state holds; written into its header, so that one kind is
/// never restored as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// The whole context (`llama_state_get_data`).
    Context,
    /// One sequence's KV cells (`llama_state_seq_get_data`).
    Seq,
    /// One sequence's KV cells and the tokens at its positions `0..n`
    /// (see [`pack_tokens`]).
    SeqTokens,
}

impl Kind {
    fn code(self) -> i32 {
        match self {
            Kind::Context => -1,
            Kind::Seq => 0,
            Kind::SeqTokens => 1,
        }
    }

    fn name(code: i32) -> &'static str {
        match code {
            -1 => "a context state",
            0 => "a sequence state",
            1 => "a sequence state with its tokens",
            _ => "a state of an unknown kind",
        }
    }
}

/// Prefix `data` with magic, model fingerprint, kind, length and tag.
pub(crate) fn seal(key: &StateKey, model: u64, kind: Kind, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&model.to_le_bytes());
    out.extend_from_slice(&kind.code().to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let t = tag(key, &out, data);
    out.extend_from_slice(&t);
    out.extend_from_slice(data);
    out
}

/// Verify and strip the framing of a state of kind `kind`.
pub(crate) fn open<'a>(key: &StateKey, bytes: &'a [u8], model: u64, kind: Kind) -> Result<&'a [u8]> {
    let bad = |why: &str| Err(Error::State(why.to_string()));
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return bad("not a state written by llama-core (or by an older version)");
    }
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap_or([0; 8]));
    let code = i32::from_le_bytes(bytes[16..20].try_into().unwrap_or([0; 4]));
    if u64_at(8) != model {
        return bad("state belongs to another model");
    }
    if code != kind.code() {
        return Err(Error::State(format!("this is {}, not {}", Kind::name(code), Kind::name(kind.code()))));
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

/// Bytes before the llama.cpp data of a [`Kind::SeqTokens`] payload with
/// `n` tokens: the count (`u32`), then the tokens (`i32` each), little-endian.
pub(crate) fn tokens_prefix_len(n: usize) -> usize {
    4 + 4 * n
}

/// Write the token prefix of a [`Kind::SeqTokens`] payload into `out`.
pub(crate) fn pack_tokens(tokens: &[Token], out: &mut Vec<u8>) {
    out.extend_from_slice(&(tokens.len() as u32).to_le_bytes());
    for t in tokens {
        out.extend_from_slice(&t.to_le_bytes());
    }
}

/// Split a verified [`Kind::SeqTokens`] payload into its tokens and the
/// llama.cpp data, refusing more than `max_tokens` tokens.
pub(crate) fn unpack_tokens(payload: &[u8], max_tokens: usize) -> Result<(Vec<Token>, &[u8])> {
    let n = payload.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    let Some(n) = n else { return Err(Error::State("sequence state has no token count".into())) };
    if n > max_tokens {
        return Err(Error::State(format!(
            "sequence state holds {n} tokens; a sequence here holds at most {max_tokens}"
        )));
    }
    let raw = n.checked_mul(4).and_then(|b| b.checked_add(4)).and_then(|end| payload.get(4..end));
    let Some(raw) = raw else {
        return Err(Error::State("sequence state is shorter than its token count".into()));
    };
    let tokens = raw.chunks_exact(4).map(|b| Token::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok((tokens, &payload[4 + raw.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_tamper() {
        let k = StateKey::from_bytes([7; 32]);
        let sealed = seal(&k, 7, Kind::Seq, b"hello");
        assert_eq!(open(&k, &sealed, 7, Kind::Seq).unwrap(), b"hello");
        assert!(open(&k, &sealed, 8, Kind::Seq).is_err());
        assert!(open(&k, &sealed, 7, Kind::Context).is_err());
        assert!(open(&k, &sealed, 7, Kind::SeqTokens).is_err());
        let mut t = sealed.clone();
        *t.last_mut().unwrap() ^= 1;
        assert!(open(&k, &t, 7, Kind::Seq).is_err());
        assert!(open(&k, &sealed[..sealed.len() - 1], 7, Kind::Seq).is_err());
        assert!(open(&k, b"", 7, Kind::Seq).is_err());
    }

    #[test]
    fn a_forged_state_with_a_recomputed_checksum_is_refused() {
        // What an attacker can do without the key: change the payload and
        // recompute every public field (the old framing's FNV checksum).
        let k = StateKey::from_bytes([1; 32]);
        let mut forged = seal(&k, 7, Kind::Context, b"evil");
        let other = seal(&StateKey::from_bytes([2; 32]), 7, Kind::Context, b"evil");
        assert!(open(&k, &other, 7, Kind::Context).is_err(), "another key's tag must not verify");
        forged[HEADER] ^= 0xff;
        assert!(open(&k, &forged, 7, Kind::Context).is_err());
        // Relabelling the kind breaks the tag too.
        let mut relabelled = seal(&k, 7, Kind::Seq, b"data");
        relabelled[16..20].copy_from_slice(&Kind::SeqTokens.code().to_le_bytes());
        assert!(open(&k, &relabelled, 7, Kind::SeqTokens).is_err());
    }

    #[test]
    fn tokens_pack_and_unpack() {
        let mut payload = Vec::new();
        pack_tokens(&[5, -1, 70_000], &mut payload);
        assert_eq!(payload.len(), tokens_prefix_len(3));
        payload.extend_from_slice(b"kv");
        let (tokens, rest) = unpack_tokens(&payload, 3).unwrap();
        assert_eq!((tokens, rest), (vec![5, -1, 70_000], &b"kv"[..]));
        assert!(unpack_tokens(&payload, 2).is_err(), "more tokens than allowed");
        assert!(unpack_tokens(&payload[..7], 3).is_err(), "truncated token list");
        assert!(unpack_tokens(b"", 3).is_err());
        assert!(unpack_tokens(&u32::MAX.to_le_bytes(), usize::MAX).is_err(), "a count past the end");
    }

    #[test]
    fn derived_keys_are_stable_and_separated() {
        let a = StateKey::derive(b"secret", "slots");
        assert_eq!(a, StateKey::derive(b"secret", "slots"));
        assert_ne!(a, StateKey::derive(b"secret", "other"));
        assert_ne!(a, StateKey::derive(b"secreT", "slots"));
    }

    #[test]
    fn process_key_is_stable() {
        assert_eq!(StateKey::process().unwrap(), StateKey::process().unwrap());
        assert_ne!(StateKey::generate().unwrap(), StateKey::generate().unwrap());
    }
}
