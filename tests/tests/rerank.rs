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
