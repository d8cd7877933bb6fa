// A `Context` wraps llama.cpp state that one thread at a time may use: it is
// `Send` but must not be `Sync` (no `&Context` shared between threads).

fn require_sync<T: Sync + ?Sized>(_: &T) {}

fn share(x: &llama_core::Context) {
    require_sync(x);
}

fn main() {}
