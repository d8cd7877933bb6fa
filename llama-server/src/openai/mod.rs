//! The OpenAI API: `/v1/models`, `/v1/chat/completions`, `/v1/completions`
//! and `/v1/embeddings`, with OpenAI's request and response shapes.

mod chat;
mod completions;
pub(crate) mod embeddings;
pub(crate) mod messages;
mod models;
mod response;
mod response_format;
mod usage;

pub(crate) use chat::{PromptFields, chat_completions, chat_prompt};
pub(crate) use completions::completions;
pub(crate) use embeddings::embeddings;
pub(crate) use models::models;
