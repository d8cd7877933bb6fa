//! LoRA adapters in the engine: which adapters the backend loaded, the
//! global scales (llama.cpp's `POST /lora-adapters`), and the effective
//! set of scales of each request.
//!
//! llama.cpp applies adapters per context, so one decode step runs one set
//! of scales for every sequence in it: the scheduler batches only
//! sequences with the same set, and a cached prefix is reused only by a
//! request with the set it was computed with.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

/// Most LoRA adapters an engine loads.
pub const MAX_LORA_ADAPTERS: usize = 64;

/// One adapter to load at engine start (llama.cpp's `--lora` and
/// `--lora-scaled`): its file and its initial global scale.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    /// The adapter's GGUF file.
    pub path: PathBuf,
    /// Its global scale until [`Engine::set_lora_scales`](crate::Engine::set_lora_scales)
    /// changes it: 1.0 for `--lora`, 0.0 with `--lora-init-without-apply`.
    pub scale: f32,
}

impl LoraSpec {
    /// An adapter loaded from `path` with global scale `scale`.
    pub fn new(path: impl Into<PathBuf>, scale: f32) -> Self {
        LoraSpec { path: path.into(), scale }
    }
}

/// A loaded adapter as [`Engine::lora_adapters`](crate::Engine::lora_adapters)
/// lists it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct LoraAdapterInfo {
    /// Its id: its index in [`EngineConfig::lora`](crate::EngineConfig::lora).
    pub id: usize,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Its global scale: what requests without their own `lora` list use.
    pub scale: f32,
    /// The adapter's `adapter.lora.task_name` metadata ("" when absent).
    pub task_name: String,
    /// The adapter's `adapter.lora.prompt_prefix` metadata ("" when absent).
    pub prompt_prefix: String,
}

impl LoraAdapterInfo {
    /// An adapter's description (backends build these as they load adapters).
    pub fn new(id: usize, path: impl Into<PathBuf>, scale: f32) -> Self {
        LoraAdapterInfo { id, path: path.into(), scale, task_name: String::new(), prompt_prefix: String::new() }
    }

    /// The same, with the adapter's task name and prompt prefix metadata.
    pub fn with_meta(mut self, task_name: impl Into<String>, prompt_prefix: impl Into<String>) -> Self {
        self.task_name = task_name.into();
        self.prompt_prefix = prompt_prefix.into();
        self
    }
}

/// Why a list of adapter scales was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LoraError {
    /// No adapter has this id.
    #[error("unknown LoRA adapter id {id}: {n_adapters} adapters are loaded (ids 0..{n_adapters})")]
    UnknownAdapter {
        /// The id given.
        id: usize,
        /// How many adapters are loaded.
        n_adapters: usize,
    },
    /// A scale that is not a finite number.
    #[error("the scale of LoRA adapter {id} must be a finite number, got {scale}")]
    InvalidScale {
        /// The adapter's id.
        id: usize,
        /// The scale given.
        scale: f32,
    },
}

/// The scale of every loaded adapter (index = id), as one step applies
/// them. Cheap to clone; compared by value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LoraSet(Arc<[f32]>);

impl LoraSet {
    /// Every adapter off.
    pub(crate) fn zeros(n: usize) -> Self {
        LoraSet(vec![0.0; n].into())
    }

    /// The scales, one per adapter.
    pub(crate) fn scales(&self) -> &[f32] {
        &self.0
    }

    /// `n` adapters, those listed with their scale (the last one wins for
    /// an id listed twice), every other one 0 — llama.cpp's rule for a
    /// request's `lora` and for `POST /lora-adapters`.
    fn from_list(n: usize, list: &[(usize, f32)]) -> Result<Self, LoraError> {
        let mut scales = vec![0.0; n];
        for &(id, scale) in list {
            let slot = scales.get_mut(id).ok_or(LoraError::UnknownAdapter { id, n_adapters: n })?;
            if !scale.is_finite() {
                return Err(LoraError::InvalidScale { id, scale });
            }
            // -0.0 and 0.0 are the same set.
            *slot = if scale == 0.0 { 0.0 } else { scale };
        }
        Ok(LoraSet(scales.into()))
    }
}

/// The engine's adapters and their global scales, shared by the callers.
#[derive(Debug)]
pub(crate) struct LoraTable {
    adapters: Vec<LoraAdapterInfo>,
    global: Mutex<LoraSet>,
}

impl LoraTable {
    /// The adapters a backend loaded, their scales the initial global ones
    /// (a scale that is not finite counts as 0; the config refuses those).
    pub(crate) fn new(adapters: Vec<LoraAdapterInfo>) -> Self {
        let scales: Vec<f32> = adapters.iter().map(|a| if a.scale.is_finite() { a.scale } else { 0.0 }).collect();
        LoraTable { adapters, global: Mutex::new(LoraSet(scales.into())) }
    }

    pub(crate) fn len(&self) -> usize {
        self.adapters.len()
    }

    fn global(&self) -> LoraSet {
        self.global.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The adapters with their current global scales.
    pub(crate) fn list(&self) -> Vec<LoraAdapterInfo> {
        let global = self.global();
        self.adapters.iter().zip(global.scales()).map(|(a, &scale)| LoraAdapterInfo { scale, ..a.clone() }).collect()
    }

    /// Replace the global scales: the listed adapters get their scale,
    /// every other one 0.
    pub(crate) fn set_global(&self, list: &[(usize, f32)]) -> Result<(), LoraError> {
        let set = LoraSet::from_list(self.len(), list)?;
        *self.global.lock().unwrap_or_else(PoisonError::into_inner) = set;
        Ok(())
    }

    /// A request's set: its own list when it has one (unlisted adapters
    /// off), else the global scales of now.
    pub(crate) fn resolve(&self, list: Option<&[(usize, f32)]>) -> Result<LoraSet, LoraError> {
        match list {
            Some(list) => LoraSet::from_list(self.len(), list),
            None => Ok(self.global()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> LoraTable {
        LoraTable::new(vec![LoraAdapterInfo::new(0, "a.gguf", 1.0), LoraAdapterInfo::new(1, "b.gguf", 0.0)])
    }

    #[test]
    fn requests_without_a_list_take_the_global_scales_and_lists_replace_them() {
        let t = table();
        assert_eq!(t.resolve(None).unwrap().scales(), &[1.0, 0.0]);
        assert_eq!(t.resolve(Some(&[(1, 0.5)])).unwrap().scales(), &[0.0, 0.5]);
        assert_eq!(t.resolve(Some(&[])).unwrap(), LoraSet::zeros(2));
        assert_eq!(t.resolve(Some(&[(0, 0.2), (0, 0.3)])).unwrap().scales(), &[0.3, 0.0]);
        t.set_global(&[(1, 2.0)]).unwrap();
        assert_eq!(t.resolve(None).unwrap().scales(), &[0.0, 2.0]);
        let listed: Vec<f32> = t.list().iter().map(|a| a.scale).collect();
        assert_eq!(listed, [0.0, 2.0]);
        assert_eq!(t.resolve(Some(&[(0, -0.0)])).unwrap(), LoraSet::zeros(2));
    }

    #[test]
    fn unknown_ids_and_bad_scales_are_refused_and_change_nothing() {
        let t = table();
        assert_eq!(t.set_global(&[(2, 1.0)]), Err(LoraError::UnknownAdapter { id: 2, n_adapters: 2 }));
        assert!(matches!(t.set_global(&[(0, f32::NAN)]), Err(LoraError::InvalidScale { id: 0, .. })));
        assert!(matches!(t.resolve(Some(&[(1, f32::INFINITY)])), Err(LoraError::InvalidScale { id: 1, .. })));
        assert_eq!(t.resolve(None).unwrap().scales(), &[1.0, 0.0]);
        let none = LoraTable::new(Vec::new());
        assert_eq!(none.resolve(Some(&[(0, 1.0)])), Err(LoraError::UnknownAdapter { id: 0, n_adapters: 0 }));
        assert_eq!(none.resolve(None).unwrap(), LoraSet::zeros(0));
    }
}
