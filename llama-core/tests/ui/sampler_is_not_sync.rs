// A `Sampler` wraps llama.cpp state that one thread at a time may use: it is
// `Send` but must not be `Sync` (no `&Sampler` shared between threads).

fn require_sync<T: Sync + ?Sized>(_: &T) {}

fn share(x: &llama_core::Sampler) {
    require_sync(x);
}

fn main() {}
