//! Response ids (`chatcmpl-…`, `cmpl-…`) and creation times.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A random id like `chatcmpl-<24 alphanumerics>`.
pub(crate) fn random_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::with_capacity(prefix.len() + 24);
    out.push_str(prefix);
    let mut bits = 0u64;
    for i in 0..24 {
        if i % 8 == 0 {
            // std's RandomState is seeded from the OS per instance: enough for ids.
            let mut h = RandomState::new().build_hasher();
            h.write_usize(i);
            bits = h.finish();
        }
        out.push(ALPHABET[(bits % ALPHABET.len() as u64) as usize] as char);
        bits /= ALPHABET.len() as u64;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_well_formed() {
        let a = random_id("chatcmpl-");
        let b = random_id("chatcmpl-");
        assert_ne!(a, b);
        assert_eq!(a.len(), "chatcmpl-".len() + 24);
        assert!(a["chatcmpl-".len()..].chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
