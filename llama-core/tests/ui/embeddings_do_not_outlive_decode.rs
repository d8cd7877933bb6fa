// Embeddings borrowed from a `Context` (per token or per sequence) live in
// llama.cpp's output buffers too: no decode while they are held.

fn token_embedding(ctx: &mut llama_core::Context, batch: &llama_core::Batch) -> llama_core::Result<f32> {
    let e = ctx.embeddings_ith(0)?;
    ctx.decode(batch)?;
    Ok(e[0])
}

fn sequence_embedding(ctx: &mut llama_core::Context, batch: &llama_core::Batch) -> llama_core::Result<f32> {
    let e = ctx.embeddings_seq(0)?;
    ctx.encode(batch)?;
    Ok(e[0])
}

fn main() {}
