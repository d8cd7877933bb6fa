// A `Batch` wraps llama.cpp state that one thread at a time may use: it is
// `Send` but must not be `Sync` (no `&Batch` shared between threads).

fn require_sync<T: Sync + ?Sized>(_: &T) {}

fn share(x: &llama_core::Batch) {
    require_sync(x);
}

fn main() {}
