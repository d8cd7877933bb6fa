// llama-baseline: llama.cpp driven directly through llama.h, linked against
// the very static libraries llama-sys builds. It is the reference that our
// Rust paths are compared with, in golden tests (same tokens) and benchmarks
// (same speed). Keep it plain: no helpers that our Rust path would not have.
//
//   llama-baseline MODEL generate PROMPT N_PREDICT [THREADS] [N_CTX] [N_BATCH]
//       greedy generation; prints one token id per line on stdout
//   llama-baseline MODEL bench N_PROMPT N_GEN REPEATS [THREADS] [N_BATCH]
//       prompt processing and generation speed; prints one JSON line
//   llama-baseline MODEL first-token PROMPT [THREADS]
//       load, prefill, sample one token, print it, exit (cold-start timing)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "llama.h"

static void quiet_log(enum ggml_log_level level, const char *text, void *ud) {
    (void)ud;
    if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static int die(const char *msg) {
    fprintf(stderr, "llama-baseline: %s\n", msg);
    return 2;
}

static struct llama_context *make_ctx(struct llama_model *model, int threads, int n_ctx, int n_batch) {
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)n_ctx;
    cp.n_batch = (uint32_t)n_batch;
    cp.n_ubatch = (uint32_t)n_batch;
    cp.n_seq_max = 1;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.no_perf = true;
    return llama_init_from_model(model, cp);
}

static int tokenize(const struct llama_vocab *vocab, const char *text, llama_token **out) {
    int len = (int)strlen(text);
    int n = -llama_tokenize(vocab, text, len, NULL, 0, true, true);
    *out = malloc(sizeof(llama_token) * (size_t)(n > 0 ? n : 1));
    return llama_tokenize(vocab, text, len, *out, n, true, true);
}

// Decode `n` tokens starting at position `pos` in chunks of n_batch; logits for the last only.
static int prefill(struct llama_context *ctx, const llama_token *toks, int n, int pos, int n_batch) {
    struct llama_batch batch = llama_batch_init(n_batch, 0, 1);
    for (int i = 0; i < n; i += n_batch) {
        int m = n - i < n_batch ? n - i : n_batch;
        batch.n_tokens = m;
        for (int j = 0; j < m; j++) {
            batch.token[j] = toks[i + j];
            batch.pos[j] = pos + i + j;
            batch.n_seq_id[j] = 1;
            batch.seq_id[j][0] = 0;
            batch.logits[j] = (i + j == n - 1);
        }
        if (llama_decode(ctx, batch) != 0) { llama_batch_free(batch); return -1; }
    }
    llama_batch_free(batch);
    return 0;
}

static double now_s(void) { return (double)llama_time_us() / 1e6; }

int main(int argc, char **argv) {
    if (argc < 3) return die("usage: llama-baseline MODEL generate|bench|first-token ...");
    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    struct llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) return die("failed to load model");
    const struct llama_vocab *vocab = llama_model_get_vocab(model);
    const char *mode = argv[2];

    if (strcmp(mode, "generate") == 0 || strcmp(mode, "first-token") == 0) {
        int first = strcmp(mode, "first-token") == 0;
        if (argc < (first ? 4 : 5)) return die("missing arguments");
        int n_predict = first ? 1 : atoi(argv[4]);
        int ai = first ? 4 : 5;
        int threads = argc > ai ? atoi(argv[ai]) : 2;
        int n_ctx = argc > ai + 1 ? atoi(argv[ai + 1]) : 2048;
        int n_batch = argc > ai + 2 ? atoi(argv[ai + 2]) : 512;
        struct llama_context *ctx = make_ctx(model, threads, n_ctx, n_batch);
        if (!ctx) return die("failed to create context");
        llama_token *toks = NULL;
        int n = tokenize(vocab, argv[3], &toks);
        if (n <= 0) return die("tokenize failed");
        struct llama_sampler *smpl = llama_sampler_chain_init(llama_sampler_chain_default_params());
        llama_sampler_chain_add(smpl, llama_sampler_init_greedy());
        if (prefill(ctx, toks, n, 0, n_batch) != 0) return die("decode failed");
        int pos = n;
        for (int i = 0; i < n_predict; i++) {
            llama_token t = llama_sampler_sample(smpl, ctx, -1);
            if (llama_vocab_is_eog(vocab, t)) break;
            printf("%d\n", t);
            fflush(stdout);
            if (i + 1 == n_predict) break;
            struct llama_batch one = llama_batch_get_one(&t, 1);
            (void)pos;
            if (llama_decode(ctx, one) != 0) return die("decode failed");
            pos++;
        }
        llama_sampler_free(smpl);
        free(toks);
        llama_free(ctx);
    } else if (strcmp(mode, "bench") == 0) {
        if (argc < 6) return die("missing arguments");
        int n_prompt = atoi(argv[3]), n_gen = atoi(argv[4]), reps = atoi(argv[5]);
        int threads = argc > 6 ? atoi(argv[6]) : 2;
        int n_batch = argc > 7 ? atoi(argv[7]) : 512;
        int n_vocab = llama_vocab_n_tokens(vocab);
        struct llama_context *ctx = make_ctx(model, threads, n_prompt + n_gen + 16, n_batch);
        if (!ctx) return die("failed to create context");
        llama_token *toks = malloc(sizeof(llama_token) * (size_t)(n_prompt > 0 ? n_prompt : 1));
        for (int i = 0; i < n_prompt; i++) toks[i] = (llama_token)((i * 7919 + 13) % n_vocab);
        // warm-up: one small decode so that lazy init is not timed
        prefill(ctx, toks, n_prompt < 8 ? n_prompt : 8, 0, n_batch);
        printf("{\"pp\":[");
        for (int r = 0; r < reps; r++) {
            llama_memory_clear(llama_get_memory(ctx), true);
            double t0 = now_s();
            if (prefill(ctx, toks, n_prompt, 0, n_batch) != 0) return die("decode failed");
            double dt = now_s() - t0;
            printf("%s%.3f", r ? "," : "", n_prompt / dt);
        }
        printf("],\"tg\":[");
        for (int r = 0; r < reps; r++) {
            llama_memory_clear(llama_get_memory(ctx), true);
            llama_token t = toks[0];
            double t0 = now_s();
            for (int i = 0; i < n_gen; i++) {
                struct llama_batch one = llama_batch_get_one(&t, 1);
                if (llama_decode(ctx, one) != 0) return die("decode failed");
                t = (llama_token)((t + 1) % n_vocab);
            }
            double dt = now_s() - t0;
            printf("%s%.3f", r ? "," : "", n_gen / dt);
        }
        printf("]}\n");
        free(toks);
        llama_free(ctx);
    } else {
        return die("unknown mode");
    }
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
