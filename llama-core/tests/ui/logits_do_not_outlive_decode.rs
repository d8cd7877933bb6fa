// Logits borrowed from a `Context` point into llama.cpp's output buffer,
// which the next decode overwrites (or reallocates): the borrow must end
// before `decode` takes the context mutably.

fn read_after_decode(ctx: &mut llama_core::Context, batch: &llama_core::Batch) -> llama_core::Result<f32> {
    let logits = ctx.logits(0)?;
    ctx.decode(batch)?;
    Ok(logits[0])
}

fn main() {}
