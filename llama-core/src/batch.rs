//! A validated `llama_batch`.

use std::ptr::NonNull;

use llama_sys as sys;

use crate::{Error, Pos, Result, SeqId, Token};

/// Most sequences one token may belong to (a shared prompt prefix).
pub const MAX_SEQS_PER_TOKEN: usize = 64;
/// Most tokens one batch may hold: the largest `n_batch` a
/// [`ContextParams`](crate::ContextParams) accepts.
pub const MAX_BATCH: usize = 1 << 20;

/// A fixed-size heap array that is only ever accessed through its raw
/// pointer (never through a reference), so that the pointers handed to
/// llama.cpp inside a `llama_batch` stay valid under Rust's aliasing rules
/// for as long as the array lives.
#[derive(Debug)]
struct RawArray<T> {
    ptr: NonNull<T>,
    len: usize,
}

impl<T: Copy> RawArray<T> {
    fn new(value: T, len: usize) -> RawArray<T> {
        let boxed: Box<[T]> = vec![value; len].into_boxed_slice();
        let len = boxed.len();
        // `Box::into_raw` never returns null.
        let ptr = NonNull::new(Box::into_raw(boxed).cast::<T>()).unwrap_or(NonNull::dangling());
        RawArray { ptr, len }
    }

    fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }

    fn set(&mut self, i: usize, value: T) {
        assert!(i < self.len, "RawArray index {i} out of bounds ({})", self.len);
        // SAFETY: `i < len`, inside the allocation made in `new`.
        unsafe { self.ptr.as_ptr().add(i).write(value) };
    }
}

impl<T> Drop for RawArray<T> {
    fn drop(&mut self) {
        let slice = std::ptr::slice_from_raw_parts_mut(self.ptr.as_ptr(), self.len);
        // SAFETY: `ptr`/`len` came from `Box::into_raw` of a boxed slice of
        // exactly `len` elements in `new`, and are freed only here.
        drop(unsafe { Box::from_raw(slice) });
    }
}

/// A batch of tokens to decode, built with checks for everything that
/// llama.cpp would assert on: capacity, token ids, sequence ids and
/// per-sequence positions that must follow on from each other.
///
/// ```
/// # use llama_core::{Batch, Error};
/// let mut batch = Batch::new(4, 2, 100)?;
/// batch.add(1, 0, &[0], false)?;
/// batch.add(2, 1, &[0], true)?;
/// assert!(matches!(batch.add(3, 5, &[0], true), Err(Error::PositionOutOfOrder { .. })));
/// assert!(matches!(batch.add(100, 0, &[1], true), Err(Error::TokenOutOfVocab { .. })));
/// assert!(matches!(batch.add(3, 0, &[7], true), Err(Error::SeqIdOutOfRange { .. })));
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug)]
pub struct Batch {
    /// Tokens in the batch (the `n_tokens` llama.cpp reads).
    n_tokens: usize,
    token: RawArray<Token>,
    pos: RawArray<Pos>,
    n_seq_id: RawArray<i32>,
    /// `capacity` rows of `seqs_per_token` sequence ids, row-major.
    seq_id_rows: RawArray<SeqId>,
    /// Pointer to each row of `seq_id_rows` (llama.cpp's `seq_id[i]`).
    seq_id: RawArray<*mut SeqId>,
    logits: RawArray<i8>,
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

// SAFETY: the batch exclusively owns its arrays (the `seq_id` pointers
// point into `seq_id_rows`, also owned); nothing else points into them, so
// moving it to another thread is fine.
unsafe impl Send for Batch {}

impl Batch {
    /// A batch for up to `capacity` tokens, sequence ids in `0..n_seq_max`
    /// and token ids in `0..n_vocab`.
    ///
    /// The arrays are allocated by Rust (llama.cpp's `llama_batch_init`
    /// does not check its allocations), sized for `capacity` tokens of up
    /// to `min(n_seq_max, MAX_SEQS_PER_TOKEN)` sequences each.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] when `capacity` is not in `1..=MAX_BATCH` or
    /// `n_seq_max` is not in `1..=llama_max_parallel_sequences()`.
    pub fn new(capacity: usize, n_seq_max: u32, n_vocab: i32) -> Result<Batch> {
        if !(1..=MAX_BATCH).contains(&capacity) {
            return Err(Error::InvalidParam {
                name: "capacity",
                reason: format!("a batch holds 1..={MAX_BATCH} tokens, got {capacity}"),
            });
        }
        // SAFETY: a pure query with no arguments.
        let max_seq = unsafe { sys::llama_max_parallel_sequences() } as u32;
        if !(1..=max_seq).contains(&n_seq_max) {
            return Err(Error::InvalidParam {
                name: "n_seq_max",
                reason: format!("must be in 1..={max_seq}, got {n_seq_max}"),
            });
        }
        let seqs_per_token = (n_seq_max as usize).min(MAX_SEQS_PER_TOKEN);
        let seq_id_rows = RawArray::new(0, capacity * seqs_per_token);
        let mut seq_id = RawArray::new(std::ptr::null_mut(), capacity);
        for i in 0..capacity {
            // SAFETY: `i * seqs_per_token < capacity * seqs_per_token`: the
            // row start lies inside `seq_id_rows`.
            seq_id.set(i, unsafe { seq_id_rows.as_ptr().add(i * seqs_per_token) });
        }
        Ok(Batch {
            n_tokens: 0,
            token: RawArray::new(0, capacity),
            pos: RawArray::new(0, capacity),
            n_seq_id: RawArray::new(0, capacity),
            seq_id_rows,
            seq_id,
            logits: RawArray::new(0, capacity),
            capacity,
            n_seq_max,
            n_vocab,
            seqs_per_token,
            last_pos: vec![None; n_seq_max as usize],
            first_pos: vec![None; n_seq_max as usize],
            outputs: Vec::with_capacity(capacity.min(4096)),
        })
    }

    /// Number of tokens in the batch.
    pub fn len(&self) -> usize {
        self.n_tokens
    }

    /// Whether the batch holds no tokens.
    pub fn is_empty(&self) -> bool {
        self.n_tokens == 0
    }

    /// Most tokens the batch can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Remove every token (keeps the allocation).
    pub fn clear(&mut self) {
        self.n_tokens = 0;
        self.last_pos.iter_mut().for_each(|p| *p = None);
        self.first_pos.iter_mut().for_each(|p| *p = None);
        self.outputs.clear();
    }

    /// Add `token` at position `pos` of every sequence in `seq_ids`; with
    /// `logits`, the decode produces logits (and embeddings) for it.
    /// Returns the token's index in the batch (for [`Context::logits`](crate::Context::logits)).
    ///
    /// # Errors
    /// [`Error::BatchFull`], [`Error::TokenOutOfVocab`], [`Error::SeqIdOutOfRange`],
    /// [`Error::PositionOutOfOrder`] (a position that does not follow the
    /// sequence's last one in this batch, or is negative), and
    /// [`Error::InvalidParam`] for an empty, too long or repeated `seq_ids`.
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
        // `i < capacity` and `seq_ids.len() <= seqs_per_token` (checked
        // above): every index is inside its array.
        self.token.set(i, token);
        self.pos.set(i, pos);
        self.n_seq_id.set(i, seq_ids.len() as i32);
        for (k, &s) in seq_ids.iter().enumerate() {
            self.seq_id_rows.set(i * self.seqs_per_token + k, s);
        }
        self.logits.set(i, i8::from(logits));
        for &s in seq_ids {
            self.first_pos[s as usize].get_or_insert(pos);
            self.last_pos[s as usize] = Some(pos);
        }
        self.outputs.push(logits);
        self.n_tokens += 1;
        Ok(i)
    }

    /// Add a run of tokens for one sequence starting at `pos`; only the last
    /// gets logits when `logits_last`. Returns the index of the last token.
    ///
    /// # Errors
    /// [`Error::EmptyBatch`] for no tokens, [`Error::BatchFull`] when they do not
    /// all fit, and whatever [`add`](Self::add) refuses.
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

    /// The `llama_batch` view of this batch: pointers into its arrays,
    /// valid while it lives and is not modified. llama.cpp only reads
    /// through them.
    pub(crate) fn raw(&self) -> sys::llama_batch {
        sys::llama_batch {
            // `n_tokens <= capacity <= MAX_BATCH < i32::MAX`.
            n_tokens: self.n_tokens as i32,
            token: self.token.as_ptr(),
            embd: std::ptr::null_mut(),
            pos: self.pos.as_ptr(),
            n_seq_id: self.n_seq_id.as_ptr(),
            seq_id: self.seq_id.as_ptr(),
            logits: self.logits.as_ptr(),
        }
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
