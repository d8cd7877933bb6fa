//! A validated `llama_batch`.

use llama_sys as sys;

use crate::{Error, Pos, Result, SeqId, Token};

/// Most sequences one token may belong to (a shared prompt prefix).
pub const MAX_SEQS_PER_TOKEN: usize = 64;

/// A batch of tokens to decode, built with checks for everything that
/// llama.cpp would assert on: capacity, token ids, sequence ids and
/// per-sequence positions that must follow on from each other.
///
/// ```
/// # use llama_core::{Batch, Error};
/// let mut batch = Batch::new(4, 2, 100);
/// batch.add(1, 0, &[0], false)?;
/// batch.add(2, 1, &[0], true)?;
/// assert!(matches!(batch.add(3, 5, &[0], true), Err(Error::PositionOutOfOrder { .. })));
/// assert!(matches!(batch.add(100, 0, &[1], true), Err(Error::TokenOutOfVocab { .. })));
/// assert!(matches!(batch.add(3, 0, &[7], true), Err(Error::SeqIdOutOfRange { .. })));
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug)]
pub struct Batch {
    raw: sys::llama_batch,
    capacity: usize,
    n_seq_max: u32,
    n_vocab: i32,
    seqs_per_token: usize,
    /// Last position added per sequence in this batch.
    last_pos: Vec<Option<Pos>>,
    /// First position added per sequence in this batch.
    first_pos: Vec<Option<Pos>>,
    outputs: Vec<bool>,
}

// SAFETY: the batch exclusively owns the arrays llama_batch_init allocated;
// nothing else points into them, so moving it to another thread is fine.
unsafe impl Send for Batch {}

impl Batch {
    /// A batch for up to `capacity` tokens, sequence ids in `0..n_seq_max`
    /// and token ids in `0..n_vocab`.
    pub fn new(capacity: usize, n_seq_max: u32, n_vocab: i32) -> Batch {
        let capacity = capacity.clamp(1, i32::MAX as usize / 2);
        let n_seq_max = n_seq_max.max(1);
        let seqs_per_token = (n_seq_max as usize).min(MAX_SEQS_PER_TOKEN);
        // SAFETY: sizes are positive and bounded; llama.cpp allocates the
        // arrays (token, pos, n_seq_id, seq_id[capacity][seqs_per_token],
        // logits) that `add` writes into within those bounds.
        let raw = unsafe { sys::llama_batch_init(capacity as i32, 0, seqs_per_token as i32) };
        Batch {
            raw,
            capacity,
            n_seq_max,
            n_vocab,
            seqs_per_token,
            last_pos: vec![None; n_seq_max as usize],
            first_pos: vec![None; n_seq_max as usize],
            outputs: Vec::with_capacity(capacity),
        }
    }

    /// Number of tokens in the batch.
    pub fn len(&self) -> usize {
        self.raw.n_tokens as usize
    }

    /// Whether the batch holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.raw.n_tokens == 0
    }

    /// Most tokens the batch can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Remove every token (keeps the allocation).
    pub fn clear(&mut self) {
        self.raw.n_tokens = 0;
        self.last_pos.iter_mut().for_each(|p| *p = None);
        self.first_pos.iter_mut().for_each(|p| *p = None);
        self.outputs.clear();
    }

    /// Add `token` at position `pos` of every sequence in `seq_ids`; with
    /// `logits`, the decode produces logits (and embeddings) for it.
    /// Returns the token's index in the batch (for [`Context::logits`](crate::Context::logits)).
    pub fn add(&mut self, token: Token, pos: Pos, seq_ids: &[SeqId], logits: bool) -> Result<usize> {
        let i = self.len();
        if i >= self.capacity {
            return Err(Error::BatchFull { capacity: self.capacity });
        }
        if !(0..self.n_vocab).contains(&token) {
            return Err(Error::TokenOutOfVocab { token, n_vocab: self.n_vocab });
        }
        if seq_ids.is_empty() || seq_ids.len() > self.seqs_per_token {
            return Err(Error::InvalidParam {
                name: "seq_ids",
                reason: format!("need 1..={} sequence ids per token, got {}", self.seqs_per_token, seq_ids.len()),
            });
        }
        if pos < 0 {
            return Err(Error::PositionOutOfOrder { seq_id: seq_ids[0], pos, expected: 0 });
        }
        for (k, &s) in seq_ids.iter().enumerate() {
            if s < 0 || s as u32 >= self.n_seq_max {
                return Err(Error::SeqIdOutOfRange { seq_id: s, n_seq_max: self.n_seq_max });
            }
            if seq_ids[..k].contains(&s) {
                return Err(Error::InvalidParam { name: "seq_ids", reason: format!("sequence {s} given twice") });
            }
            if let Some(last) = self.last_pos[s as usize]
                && pos != last + 1
            {
                return Err(Error::PositionOutOfOrder { seq_id: s, pos, expected: last + 1 });
            }
        }
        // SAFETY: `i < capacity` and `seq_ids.len() <= seqs_per_token`, the
        // sizes llama_batch_init allocated for these arrays.
        unsafe {
            *self.raw.token.add(i) = token;
            *self.raw.pos.add(i) = pos;
            *self.raw.n_seq_id.add(i) = seq_ids.len() as i32;
            let dst = *self.raw.seq_id.add(i);
            for (k, &s) in seq_ids.iter().enumerate() {
                *dst.add(k) = s;
            }
            *self.raw.logits.add(i) = i8::from(logits);
        }
        for &s in seq_ids {
            self.first_pos[s as usize].get_or_insert(pos);
            self.last_pos[s as usize] = Some(pos);
        }
        self.outputs.push(logits);
        self.raw.n_tokens += 1;
        Ok(i)
    }

    /// Add a run of tokens for one sequence starting at `pos`; only the last
    /// gets logits when `logits_last`. Returns the index of the last token.
    pub fn add_sequence(&mut self, tokens: &[Token], pos: Pos, seq_id: SeqId, logits_last: bool) -> Result<usize> {
        if tokens.is_empty() {
            return Err(Error::EmptyBatch);
        }
        if self.len() + tokens.len() > self.capacity {
            return Err(Error::BatchFull { capacity: self.capacity });
        }
        let mut last = 0;
        for (k, &t) in tokens.iter().enumerate() {
            last = self.add(t, pos + k as Pos, &[seq_id], logits_last && k + 1 == tokens.len())?;
        }
        Ok(last)
    }

    pub(crate) fn raw(&self) -> sys::llama_batch {
        self.raw
    }

    pub(crate) fn n_seq_max(&self) -> u32 {
        self.n_seq_max
    }

    pub(crate) fn n_vocab(&self) -> i32 {
        self.n_vocab
    }

    /// (sequence, first position, last position) for each sequence present.
    pub(crate) fn seq_ranges(&self) -> impl Iterator<Item = (SeqId, Pos, Pos)> + '_ {
        self.first_pos.iter().zip(&self.last_pos).enumerate().filter_map(|(s, (f, l))| Some((s as SeqId, (*f)?, (*l)?)))
    }

    pub(crate) fn outputs(&self) -> &[bool] {
        &self.outputs
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: `raw` came from llama_batch_init and is freed only here.
        unsafe { sys::llama_batch_free(self.raw) };
    }
}
