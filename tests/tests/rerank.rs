//! Reranking end to end below the server: the tiny reranker the suite
//! builds (`llama_e2e::reranker`) through llama-core (rank pooling: one
//! score per sequence) and llama-runtime (`Engine::rerank`: one score per
//! document, in order, deterministic, finite). The weights are random, so
//! what the scores say is not tested; that they come back, where and how,
//! is.

use std::sync::Arc;

use llama_core::{Context, ContextParams, Model, ModelParams, Pooling};
use llama_e2e::reranker;

fn model() -> Arc<Model> {
    static MODEL: std::sync::OnceLock<Arc<Model>> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            Arc::new(Model::load(reranker::path(), &ModelParams::default()).expect("load the tiny reranker"))
        })
        .clone()
}

fn rank_context(model: &Arc<Model>, pooling: Pooling) -> Context {
    let params = ContextParams {
        n_ctx: 128,
        n_batch: 128,
        n_ubatch: 128,
        n_seq_max: 1,
        n_threads: 1,
        n_threads_batch: 1,
        embeddings: true,
        pooling,
        ..Default::default()
    };
    Context::new(Arc::clone(model), &params).expect("a rank-pooling context")
}

fn score(ctx: &mut Context, tokens: &[i32]) -> Vec<f32> {
    let mut out = llama_core::embed(ctx, &[tokens.to_vec()], false).expect("rank-pool the pair");
    out.pop().expect("one output")
}

#[test]
fn llama_core_rank_pooling_gives_one_finite_score_per_sequence() {
    let model = model();
    assert_eq!(model.architecture().as_deref(), Some("bert"));
    // The model declares rank pooling; asking for it explicitly is the same.
    for pooling in [Pooling::Unspecified, Pooling::Rank] {
        let mut ctx = rank_context(&model, pooling);
        assert_eq!(ctx.pooling(), Pooling::Rank);
        assert!(!ctx.causal_attn());
        let a = score(&mut ctx, &reranker::rerank_tokens("what is a panda", "a bear"));
        let b = score(&mut ctx, &reranker::rerank_tokens("what is a panda", "hi"));
        assert_eq!(a.len(), 1, "{a:?}");
        assert!(a[0].is_finite() && b[0].is_finite(), "{a:?} {b:?}");
        assert_ne!(a, b, "different documents, different scores");
        assert_eq!(a, score(&mut ctx, &reranker::rerank_tokens("what is a panda", "a bear")), "deterministic");
    }
}

#[test]
fn llama_core_knows_the_layout_tokens_and_the_position_limit() {
    let model = model();
    let vocab = model.vocab();
    assert_eq!(
        (vocab.bos(), vocab.eos(), vocab.sep()),
        (Some(reranker::CLS), Some(reranker::SEP), Some(reranker::SEP))
    );
    assert!(vocab.add_bos() && vocab.add_eos() && vocab.add_sep());
    assert_eq!(model.max_positions(), Some(reranker::N_CTX_TRAIN as u32));
    // A context larger than the position embedding is capped to it, and a
    // position past it is a typed error, not llama.cpp's abort.
    let params = ContextParams {
        n_ctx: 512,
        n_batch: 512,
        n_ubatch: 512,
        n_threads: 1,
        n_threads_batch: 1,
        embeddings: true,
        ..Default::default()
    };
    let mut ctx = Context::new(Arc::clone(&model), &params).unwrap();
    assert_eq!(ctx.n_ctx_seq(), reranker::N_CTX_TRAIN as u32);
    let too_long = vec![reranker::word_start('a'); reranker::N_CTX_TRAIN as usize + 1];
    let err = llama_core::embed(&mut ctx, &[too_long], false).unwrap_err();
    assert!(matches!(err, llama_core::Error::ContextOverflow { .. }), "{err}");
    let fits = vec![reranker::word_start('a'); reranker::N_CTX_TRAIN as usize];
    assert_eq!(llama_core::embed(&mut ctx, &[fits], false).unwrap()[0].len(), 1);
}

mod runtime {
    use super::*;
    use llama_e2e::gguf_edit::Value;
    use llama_runtime::{Engine, EngineConfig, ModelFacade, Rejected, RerankFormat};

    fn engine(model: Arc<Model>) -> Engine {
        let config = EngineConfig {
            n_ctx: 512,
            n_seq_max: 2,
            n_threads: 1,
            n_threads_batch: 1,
            embeddings: true,
            pooling: Pooling::Rank,
            ..Default::default()
        };
        Engine::start(model, config).expect("start a reranking engine")
    }

    const QUERY: &str = "what is a panda";
    const DOCS: [&str; 3] = ["hi", "it is a bear", "a panda is a bear"];

    #[tokio::test]
    async fn engine_rerank_scores_each_document_as_llama_core_does() {
        let model = model();
        let engine = engine(Arc::clone(&model));
        let format = &engine.model().info().rerank;
        assert_eq!(
            (format.bos, format.eos, format.sep),
            (Some(reranker::CLS), Some(reranker::SEP), Some(reranker::SEP))
        );
        assert!(format.add_bos && format.add_eos && format.add_sep && format.template.is_none());
        let docs: Vec<String> = DOCS.map(String::from).to_vec();
        let scores = engine.rerank(QUERY, &docs).unwrap().await.unwrap();
        assert_eq!(scores.len(), DOCS.len());
        let mut ctx = rank_context(&model, Pooling::Rank);
        for (doc, got) in DOCS.iter().zip(&scores) {
            let tokens = reranker::rerank_tokens(QUERY, doc);
            assert_eq!(got.n_tokens as usize, tokens.len(), "{doc}: [CLS] query [SEP] [SEP] document [SEP]");
            let want = score(&mut ctx, &tokens)[0];
            assert!(got.score.is_finite() && (got.score - want).abs() < 1e-4, "{doc}: {} vs {want}", got.score);
        }
        let again = engine.rerank(QUERY, &docs).unwrap().await.unwrap();
        assert_eq!(scores, again, "deterministic");
        // The engine ranks; it does not embed, and an encoder does not generate.
        let err = engine.embed(vec!["a".into()], true).unwrap_err();
        assert!(matches!(err, Rejected::RerankingOnly), "{err}");
        assert!(engine.model().info().encoder_only);
        let err = engine.submit(llama_runtime::Request::new("what")).unwrap_err();
        assert!(matches!(err, Rejected::CannotGenerate), "{err}");
        // A pair past the model's positions names its document.
        let long = ["a".to_owned(), "a ".repeat(200)];
        match engine.rerank(QUERY, &long).unwrap_err() {
            Rejected::Input { index: 1, reason } => {
                assert!(matches!(*reason, Rejected::InputTooLong { limit: 128, .. }))
            }
            other => panic!("{other}"),
        }
        engine.shutdown(std::time::Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn a_rerank_template_replaces_the_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("templated.gguf");
        let template = "[CLS]{query}[SEP]{document}";
        reranker::write_to(&path, &[("tokenizer.chat_template.rerank", Value::Str(template.into()))]).unwrap();
        let model = Arc::new(Model::load(&path, &ModelParams::default()).unwrap());
        let engine = engine(Arc::clone(&model));
        let format: &RerankFormat = &engine.model().info().rerank;
        assert_eq!(format.template.as_deref(), Some(template));
        let scores = engine.rerank(QUERY, &[DOCS[1].to_owned()]).unwrap().await.unwrap();
        let tokens =
            [vec![reranker::CLS], reranker::tokens_of(QUERY), vec![reranker::SEP], reranker::tokens_of(DOCS[1])]
                .concat();
        assert_eq!(scores[0].n_tokens as usize, tokens.len());
        let want = score(&mut rank_context(&model, Pooling::Rank), &tokens)[0];
        assert!((scores[0].score - want).abs() < 1e-4, "{} vs {want}", scores[0].score);
        engine.shutdown(std::time::Duration::from_secs(5)).await;
    }
}
