//! Reranking: [`Engine::rerank`] scores documents against a query with a
//! reranker model (a cross-encoder with a classification head, run with
//! rank pooling), one score per document.
//!
//! Each (query, document) pair becomes one prompt, laid out as llama.cpp's
//! server does (`format_prompt_rerank`): the model's rerank template
//! (`tokenizer.chat_template.rerank`, with `{query}` and `{document}`)
//! when it has one, else `BOS query EOS SEP document EOS`, each special
//! token only where the model's metadata asks for it. The prompts run as
//! one embedding job on the engine's embedding context, whose pooled
//! output under rank pooling is the classification head's output; the
//! first value is the score (llama.cpp's `embd[0]`), unnormalized.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use llama_core::{Model, Pooling, Token};
use tokio::sync::oneshot;

use crate::engine::{Embeddings, Engine};
use crate::inbox::{EmbedJob, PushError};
use crate::inference::{Inference, ModelFacade};
use crate::request::{CoreError, EngineError, Rejected};

/// How a model lays out a query and a document for reranking: its special
/// tokens, whether its metadata asks for each, and its rerank template.
/// Part of [`ModelInfo`](crate::ModelInfo).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RerankFormat {
    /// BOS, put first when `add_bos`.
    pub bos: Option<Token>,
    /// EOS, after the query and after the document when `add_eos` (the
    /// separator stands in when the model has no EOS, as in llama.cpp).
    pub eos: Option<Token>,
    /// The separator, between the query and the document when `add_sep`.
    pub sep: Option<Token>,
    /// `tokenizer.ggml.add_bos_token` (or the tokenizer's default).
    pub add_bos: bool,
    /// `tokenizer.ggml.add_eos_token` (or the tokenizer's default).
    pub add_eos: bool,
    /// `tokenizer.ggml.add_sep_token` (or the tokenizer's default).
    pub add_sep: bool,
    /// `tokenizer.chat_template.rerank`: a prompt with `{query}` and
    /// `{document}`, which replaces the token layout when present.
    pub template: Option<String>,
}

/// The metadata key of a model's rerank template (llama.cpp's
/// `llama_model_chat_template(model, "rerank")`).
const TEMPLATE_KEY: &str = "tokenizer.chat_template.rerank";

impl RerankFormat {
    /// What `model` declares.
    pub fn of(model: &Model) -> Self {
        let vocab = model.vocab();
        RerankFormat {
            bos: vocab.bos(),
            eos: vocab.eos(),
            sep: vocab.sep(),
            add_bos: vocab.add_bos(),
            add_eos: vocab.add_eos(),
            add_sep: vocab.add_sep(),
            template: model.meta(TEMPLATE_KEY),
        }
    }

    /// The prompt of one (query, document) pair, tokenized by `model`.
    /// The texts are tokenized without special tokens and without parsing
    /// special-token text, except through a template, whose own special
    /// tokens are parsed (as llama.cpp does). A special token the layout
    /// asks for but the model lacks is left out.
    ///
    /// # Errors
    /// The tokenizer's error (text too long, or refused by llama.cpp).
    pub fn tokens(&self, model: &dyn ModelFacade, query: &str, document: &str) -> Result<Vec<Token>, CoreError> {
        if let Some(template) = &self.template {
            return model.tokenize(&fill_template(template, query, document), false, true);
        }
        let query = model.tokenize(query, false, false)?;
        let document = model.tokenize(document, false, false)?;
        let eos = self.eos.or(self.sep).filter(|_| self.add_eos);
        let mut out = Vec::with_capacity(query.len() + document.len() + 4);
        out.extend(self.bos.filter(|_| self.add_bos));
        out.extend(query);
        out.extend(eos);
        out.extend(self.sep.filter(|_| self.add_sep));
        out.extend(document);
        out.extend(eos);
        Ok(out)
    }
}

/// `template` with `{query}` and `{document}` replaced. One pass, so that
/// a query that contains `{document}` is not expanded again (llama.cpp
/// replaces the two in turn).
fn fill_template(template: &str, query: &str, document: &str) -> String {
    let mut out = String::with_capacity(template.len() + query.len() + document.len());
    let mut rest = template;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("{query}") {
            out.push_str(query);
            rest = after;
        } else if let Some(after) = tail.strip_prefix("{document}") {
            out.push_str(document);
            rest = after;
        } else {
            out.push('{');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// One document's score from [`Engine::rerank`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RerankScore {
    /// The reranker's output for the pair (the first value of its
    /// classification head, as llama.cpp reports it: a logit, not a
    /// probability, for most rerankers).
    pub score: f32,
    /// Tokens in the pair's prompt.
    pub n_tokens: u32,
}

/// A queued reranking job ([`Engine::rerank`]): resolves to one
/// [`RerankScore`] per document, in the documents' order.
///
/// # Cancel safety
///
/// Dropping it abandons the job; the engine skips the documents it has not
/// scored yet. No state is left behind.
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited; dropping it abandons the job"]
pub struct Reranking {
    inner: Embeddings,
}

impl Future for Reranking {
    type Output = Result<Vec<RerankScore>, EngineError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.get_mut().inner).poll(cx).map(|result| {
            result?
                .into_iter()
                .map(|e| match e.vector.first() {
                    Some(&score) => Ok(RerankScore { score, n_tokens: e.n_tokens }),
                    None => Err(EngineError::Internal("the reranker returned no score".into())),
                })
                .collect()
        })
    }
}

impl<I: Inference> Engine<I> {
    /// Score each of `documents` against `query` with the engine's reranker
    /// (an engine started with `embeddings` and [`Pooling::Rank`]). Never
    /// blocks: the pairs are laid out ([`RerankFormat`]), tokenized and
    /// checked on the caller's thread, then queued as one job or refused at
    /// once. The job runs on the engine thread between decode steps, one
    /// document per step, so generation keeps streaming meanwhile. Each
    /// pair may have at most `min(n_ubatch, n_ctx_seq)` tokens.
    ///
    /// # Errors
    /// [`Rejected::RerankingDisabled`] when the engine was not started for
    /// reranking; [`Rejected::Overloaded`] when the queue is full;
    /// [`Rejected::ShuttingDown`]; [`Rejected::Input`] naming a document
    /// whose pair does not tokenize or is too long
    /// ([`Rejected::InputTooLong`], [`Rejected::EmptyPrompt`]).
    pub fn rerank(&self, query: &str, documents: &[String]) -> Result<Reranking, Rejected> {
        let front = self.front();
        let config = &front.config;
        if !(config.embeddings && config.pooling == Pooling::Rank) {
            return Err(Rejected::RerankingDisabled);
        }
        if front.inbox.is_closed() {
            return Err(Rejected::ShuttingDown);
        }
        let limit = config.n_ubatch.min(front.n_ctx_seq);
        let format = &front.model.info().rerank;
        let mut inputs = Vec::with_capacity(documents.len());
        for (index, document) in documents.iter().enumerate() {
            let tokens = format.tokens(&front.model, query, document).map_err(Rejected::Tokenize).and_then(|t| {
                let n_tokens = u32::try_from(t.len()).unwrap_or(u32::MAX);
                match n_tokens {
                    0 => Err(Rejected::EmptyPrompt),
                    n if n > limit => Err(Rejected::InputTooLong { n_tokens, limit }),
                    _ => Ok(t),
                }
            });
            inputs.push(tokens.map_err(|reason| Rejected::Input { index, reason: Box::new(reason) })?);
        }
        let (reply, rx) = oneshot::channel();
        if inputs.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
            return Ok(Reranking { inner: Embeddings::new(rx) });
        }
        match front.inbox.push_embed(EmbedJob { inputs, normalize: false, reply }) {
            Ok(()) => Ok(Reranking { inner: Embeddings::new(rx) }),
            Err(PushError::Full(_)) => Err(Rejected::Overloaded { queue_capacity: front.inbox.capacity() }),
            Err(PushError::Closed(_)) => Err(Rejected::ShuttingDown),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FAKE_BOS, FAKE_EOG, FakeInference, FakeModel};
    use crate::{EngineConfig, Prompt};

    fn config(pooling: Pooling) -> EngineConfig {
        EngineConfig {
            n_ctx: 1024,
            n_seq_max: 2,
            n_batch: 64,
            n_ubatch: 32,
            n_threads: 1,
            n_threads_batch: 1,
            embeddings: true,
            pooling,
            ..EngineConfig::default()
        }
    }

    fn engine(cfg: EngineConfig) -> Engine<FakeInference> {
        Engine::with_inference(FakeInference::for_config(&cfg), FakeModel::default(), cfg).unwrap()
    }

    #[tokio::test]
    async fn one_score_per_document_in_order_from_the_laid_out_pair() {
        let cfg = config(Pooling::Rank);
        let engine = engine(cfg.clone());
        let docs: Vec<String> = ["a bear", "hi", "a bear", ""].map(String::from).to_vec();
        let scores = engine.rerank("what is a panda", &docs).unwrap().await.unwrap();
        assert_eq!(scores.len(), docs.len());
        // The fake's layout: BOS query EOS document EOS; its score is the
        // first value of its "embedding" of that prompt.
        let m = FakeModel::default();
        let mut fake = FakeInference::for_config(&cfg);
        for (doc, got) in docs.iter().zip(&scores) {
            let tokens = [
                vec![FAKE_BOS],
                m.tokenize("what is a panda", false, false).unwrap(),
                vec![FAKE_EOG],
                m.tokenize(doc, false, false).unwrap(),
                vec![FAKE_EOG],
            ]
            .concat();
            assert_eq!(got.n_tokens as usize, tokens.len(), "{doc:?}");
            assert_eq!(got.score, fake.embed(&tokens).unwrap()[0], "{doc:?}");
            assert!(got.score.is_finite());
        }
        assert_eq!(scores[0], scores[2], "the same pair scores the same");
        assert!(engine.rerank("q", &[]).unwrap().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn refusals_are_typed() {
        let engine = engine(config(Pooling::Rank));
        // A reranking engine does not embed.
        let err = engine.embed(vec![Prompt::Text("x".into())], true).unwrap_err();
        assert!(matches!(err, Rejected::RerankingOnly), "{err}");
        // A pair longer than a micro-batch names its document.
        let docs = ["short".to_owned(), "x".repeat(40)];
        match engine.rerank("q", &docs).unwrap_err() {
            Rejected::Input { index: 1, reason } => {
                assert!(matches!(*reason, Rejected::InputTooLong { limit: 32, .. }), "{reason}");
            }
            other => panic!("{other}"),
        }
        let err = engine.rerank("q\0", &docs[..1]).unwrap_err();
        assert!(
            matches!(err, Rejected::Input { index: 0, ref reason } if matches!(**reason, Rejected::Tokenize(_))),
            "{err}"
        );
        // An embedding engine does not rerank.
        for cfg in [config(Pooling::Mean), EngineConfig { embeddings: false, ..config(Pooling::Unspecified) }] {
            let err = self::engine(cfg).rerank("q", &docs[..1]).unwrap_err();
            assert!(matches!(err, Rejected::RerankingDisabled), "{err}");
        }
        engine.shutdown(std::time::Duration::from_secs(1)).await;
        assert!(matches!(engine.rerank("q", &docs[..1]).unwrap_err(), Rejected::ShuttingDown));
    }

    #[tokio::test]
    async fn an_encoder_reranks_but_does_not_generate() {
        let cfg = config(Pooling::Rank);
        let model = FakeModel::default().with_info(|i| i.encoder_only = true);
        let engine = Engine::with_inference(FakeInference::for_config(&cfg), model, cfg).unwrap();
        let err = engine.submit(crate::Request::new("hello")).unwrap_err();
        assert!(matches!(err, Rejected::CannotGenerate), "{err}");
        assert_eq!(engine.rerank("q", &["d".to_owned()]).unwrap().await.unwrap().len(), 1);
    }

    #[test]
    fn llama_cpp_layouts() {
        let m = FakeModel::default();
        let q = m.tokenize("q", false, false).unwrap();
        let d = m.tokenize("d", false, false).unwrap();
        let full = RerankFormat {
            bos: Some(10),
            eos: Some(11),
            sep: Some(12),
            add_bos: true,
            add_eos: true,
            add_sep: true,
            template: None,
        };
        assert_eq!(
            full.tokens(&m, "q", "d").unwrap(),
            [vec![10], q.clone(), vec![11, 12], d.clone(), vec![11]].concat()
        );
        // No EOS: the separator stands in; no flags: the bare texts.
        let no_eos = RerankFormat { eos: None, ..full.clone() };
        assert_eq!(
            no_eos.tokens(&m, "q", "d").unwrap(),
            [vec![10], q.clone(), vec![12, 12], d.clone(), vec![12]].concat()
        );
        let bare = RerankFormat::default();
        assert_eq!(bare.tokens(&m, "q", "d").unwrap(), [q.clone(), d.clone()].concat());
        // A template replaces the layout.
        let t = RerankFormat { template: Some("d{document}q{query}".into()), ..full };
        assert_eq!(t.tokens(&m, "q", "d").unwrap(), m.tokenize("ddqq", false, true).unwrap());
    }

    #[test]
    fn templates_fill_once() {
        assert_eq!(fill_template("<q>{query}</q><d>{document}</d>", "a", "b"), "<q>a</q><d>b</d>");
        assert_eq!(fill_template("{document}{query}{x}{", "{document}", "{query}"), "{query}{document}{x}{");
        assert_eq!(fill_template("no slots", "a", "b"), "no slots");
        assert_eq!(fill_template("ü{query}ß", "é", ""), "üéß");
    }
}
