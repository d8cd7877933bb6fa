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
//   llama-baseline MODEL batched N_PROMPT N_GEN N_SEQ REPEATS THREADS N_BATCH N_CTX N_SEQ_MAX
//       N_SEQ sequences at once, the way a continuous-batching server runs
//       them at its best: every prompt prefilled (batches of up to N_BATCH
//       tokens), then N_GEN greedy tokens per sequence, one batch of N_SEQ
//       tokens per step; prints one JSON line with times to first token,
//       inter-token latencies and aggregate tokens/s
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

// The `batched` mode: an ideal continuous-batching run over N_SEQ sequences
// (KV not unified, as llama-runtime sets it up).
static int run_batched(struct llama_model *model, const struct llama_vocab *vocab, int argc, char **argv) {
    if (argc < 11) return die("batched: missing arguments");
    int n_prompt = atoi(argv[3]), n_gen = atoi(argv[4]), n_seq = atoi(argv[5]), reps = atoi(argv[6]);
    int threads = atoi(argv[7]), n_batch = atoi(argv[8]), n_ctx = atoi(argv[9]), n_seq_max = atoi(argv[10]);
    if (n_prompt < 1 || n_gen < 1 || n_seq < 1 || n_seq > n_seq_max || reps < 1 || n_batch < n_seq)
        return die("batched: bad sizes");
    int n_vocab = llama_vocab_n_tokens(vocab);
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = (uint32_t)n_ctx;
    cp.n_batch = (uint32_t)n_batch;
    cp.n_ubatch = (uint32_t)n_batch;
    cp.n_seq_max = (uint32_t)n_seq_max;
    cp.n_threads = threads;
    cp.n_threads_batch = threads;
    cp.kv_unified = false;
    cp.no_perf = true;
    struct llama_context *ctx = llama_init_from_model(model, cp);
    if (!ctx) return die("failed to create context");
    struct llama_sampler **smpl = malloc(sizeof(*smpl) * (size_t)n_seq);
    for (int s = 0; s < n_seq; s++) {
        smpl[s] = llama_sampler_chain_init(llama_sampler_chain_default_params());
        llama_sampler_chain_add(smpl[s], llama_sampler_init_greedy());
    }
    struct llama_batch batch = llama_batch_init(n_batch, 0, 1);
    llama_token *next = malloc(sizeof(llama_token) * (size_t)n_seq);
    double *first = malloc(sizeof(double) * (size_t)n_seq);
    // warm-up: one small decode so that lazy init is not timed
    {
        llama_token t = 1;
        struct llama_batch one = llama_batch_get_one(&t, 1);
        llama_decode(ctx, one);
    }
    printf("{\"ttft_ms\":[");
    int printed = 0;
    double *agg = malloc(sizeof(double) * (size_t)reps);
    double *itl = malloc(sizeof(double) * (size_t)reps * (size_t)(n_gen > 1 ? n_gen - 1 : 1));
    int n_itl = 0;
    for (int r = 0; r < reps; r++) {
        llama_memory_clear(llama_get_memory(ctx), true);
        for (int s = 0; s < n_seq; s++) llama_sampler_reset(smpl[s]);
        double t0 = now_s();
        // prefill: sequences one after another, flushed every n_batch tokens;
        // a sequence's first token is sampled right after the batch that
        // holds its last prompt token
        batch.n_tokens = 0;
        int pending_from = 0;  // first sequence whose first token is not sampled yet
        for (int s = 0; s < n_seq; s++) {
            for (int i = 0; i < n_prompt; i++) {
                int j = batch.n_tokens++;
                batch.token[j] = (llama_token)((i * 7919 + 13 + s * 104729) % n_vocab);
                batch.pos[j] = i;
                batch.n_seq_id[j] = 1;
                batch.seq_id[j][0] = s;
                batch.logits[j] = (i == n_prompt - 1);
                int last_token = (s == n_seq - 1 && i == n_prompt - 1);
                if (batch.n_tokens == n_batch || last_token) {
                    if (llama_decode(ctx, batch) != 0) return die("decode failed");
                    int upto = (i == n_prompt - 1) ? s : s - 1;
                    for (int q = pending_from; q <= upto; q++) {
                        next[q] = llama_sampler_sample(smpl[q], ctx, -1 - (upto - q));
                        first[q] = now_s();
                    }
                    if (upto >= pending_from) pending_from = upto + 1;
                    batch.n_tokens = 0;
                }
            }
        }
        for (int s = 0; s < n_seq; s++) printf("%s%.3f", printed++ ? "," : "", (first[s] - t0) * 1e3);
        double prev = now_s();
        for (int g = 1; g < n_gen; g++) {
            batch.n_tokens = n_seq;
            for (int s = 0; s < n_seq; s++) {
                batch.token[s] = next[s];
                batch.pos[s] = n_prompt + g - 1;
                batch.n_seq_id[s] = 1;
                batch.seq_id[s][0] = s;
                batch.logits[s] = 1;
            }
            if (llama_decode(ctx, batch) != 0) return die("decode failed");
            for (int s = 0; s < n_seq; s++) next[s] = llama_sampler_sample(smpl[s], ctx, s);
            double now = now_s();
            itl[n_itl++] = (now - prev) * 1e3;
            prev = now;
        }
        agg[r] = (double)n_seq * n_gen / (prev - t0);
    }
    printf("],\"itl_ms\":[");
    for (int i = 0; i < n_itl; i++) printf("%s%.3f", i ? "," : "", itl[i]);
    printf("],\"aggregate_tok_s\":[");
    for (int r = 0; r < reps; r++) printf("%s%.3f", r ? "," : "", agg[r]);
    printf("]}\n");
    for (int s = 0; s < n_seq; s++) llama_sampler_free(smpl[s]);
    free(smpl);
    free(next);
    free(first);
    free(agg);
    free(itl);
    llama_batch_free(batch);
    llama_free(ctx);
    return 0;
}

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
    } else if (strcmp(mode, "batched") == 0) {
        int rc = run_batched(model, vocab, argc, argv);
        if (rc != 0) return rc;
    } else {
        return die("unknown mode");
    }
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
