//! [`DynEngine`]: an [`Engine`] of any backend behind one object-safe trait.

use std::time::Duration;

use futures::future::BoxFuture;
use llama_core::Token;

use crate::config::EngineConfig;
use crate::engine::{Embeddings, Engine};
use crate::handle::Handle;
use crate::inference::{Inference, ModelFacade};
use crate::lora::{LoraAdapterInfo, LoraError};
use crate::metrics::{Health, Metrics, SlotInfo};
use crate::request::{Prompt, Rejected, Request};
use crate::rerank::Reranking;
use crate::slot::{SavedSlot, SlotOp};

/// What a caller does with a running [`Engine`], whatever its backend:
/// submit requests, embed, rerank, save, restore and erase slots, read the
/// counters, stop it, and reach the model's [`ModelFacade`]. Implemented by every `Engine<I>`; a server
/// holds `Arc<dyn DynEngine>` so that the same handlers run over llama.cpp
/// and over the fake backend of its router tests.
///
/// Each method is the [`Engine`] method of the same name.
pub trait DynEngine: Send + Sync + std::fmt::Debug + 'static {
    /// [`Engine::submit`].
    ///
    /// # Errors
    /// [`Rejected`], as [`Engine::submit`].
    fn submit(&self, req: Request) -> Result<Handle, Rejected>;
    /// [`Engine::embed`].
    ///
    /// # Errors
    /// [`Rejected`], as [`Engine::embed`].
    fn embed(&self, inputs: Vec<Prompt>, normalize: bool) -> Result<Embeddings, Rejected>;
    /// [`Engine::rerank`].
    ///
    /// # Errors
    /// [`Rejected`], as [`Engine::rerank`].
    fn rerank(&self, query: &str, documents: &[String]) -> Result<Reranking, Rejected>;
    /// [`Engine::save_slot`].
    ///
    /// # Errors
    /// The future resolves to a [`SlotError`](crate::SlotError), as [`Engine::save_slot`].
    fn save_slot(&self, slot: u32) -> SlotOp<SavedSlot>;
    /// [`Engine::restore_slot`].
    ///
    /// # Errors
    /// The future resolves to a [`SlotError`](crate::SlotError), as [`Engine::restore_slot`].
    fn restore_slot(&self, slot: u32, bytes: Vec<u8>) -> SlotOp<Vec<Token>>;
    /// [`Engine::erase_slot`].
    ///
    /// # Errors
    /// The future resolves to a [`SlotError`](crate::SlotError), as [`Engine::erase_slot`].
    fn erase_slot(&self, slot: u32) -> SlotOp<usize>;
    /// [`Engine::lora_adapters`].
    fn lora_adapters(&self) -> Vec<LoraAdapterInfo>;
    /// [`Engine::set_lora_scales`].
    ///
    /// # Errors
    /// [`LoraError`], as [`Engine::set_lora_scales`].
    fn set_lora_scales(&self, scales: &[(usize, f32)]) -> Result<(), LoraError>;
    /// [`Engine::model`].
    fn model(&self) -> &dyn ModelFacade;
    /// [`Engine::config`].
    fn config(&self) -> &EngineConfig;
    /// [`Engine::n_ctx_seq`].
    fn n_ctx_seq(&self) -> u32;
    /// [`Engine::metrics`].
    fn metrics(&self) -> Metrics;
    /// [`Engine::slots`].
    fn slots(&self) -> Vec<SlotInfo>;
    /// [`Engine::health`].
    fn health(&self) -> Health;
    /// [`Engine::shutdown`].
    fn shutdown(&self, drain: Duration) -> BoxFuture<'_, ()>;
}

impl<I: Inference> DynEngine for Engine<I> {
    fn submit(&self, req: Request) -> Result<Handle, Rejected> {
        Engine::submit(self, req)
    }

    fn embed(&self, inputs: Vec<Prompt>, normalize: bool) -> Result<Embeddings, Rejected> {
        Engine::embed(self, inputs, normalize)
    }

    fn rerank(&self, query: &str, documents: &[String]) -> Result<Reranking, Rejected> {
        Engine::rerank(self, query, documents)
    }

    fn save_slot(&self, slot: u32) -> SlotOp<SavedSlot> {
        Engine::save_slot(self, slot)
    }

    fn restore_slot(&self, slot: u32, bytes: Vec<u8>) -> SlotOp<Vec<Token>> {
        Engine::restore_slot(self, slot, bytes)
    }

    fn erase_slot(&self, slot: u32) -> SlotOp<usize> {
        Engine::erase_slot(self, slot)
    }

    fn lora_adapters(&self) -> Vec<LoraAdapterInfo> {
        Engine::lora_adapters(self)
    }

    fn set_lora_scales(&self, scales: &[(usize, f32)]) -> Result<(), LoraError> {
        Engine::set_lora_scales(self, scales)
    }

    fn model(&self) -> &dyn ModelFacade {
        Engine::model(self)
    }

    fn config(&self) -> &EngineConfig {
        Engine::config(self)
    }

    fn n_ctx_seq(&self) -> u32 {
        Engine::n_ctx_seq(self)
    }

    fn metrics(&self) -> Metrics {
        Engine::metrics(self)
    }

    fn slots(&self) -> Vec<SlotInfo> {
        Engine::slots(self)
    }

    fn health(&self) -> Health {
        Engine::health(self)
    }

    fn shutdown(&self, drain: Duration) -> BoxFuture<'_, ()> {
        Box::pin(Engine::shutdown(self, drain))
    }
}
