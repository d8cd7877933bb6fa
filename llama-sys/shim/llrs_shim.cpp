// See llrs_shim.h.
#include "llrs_shim.h"

#include <exception>
#include <new>
#include <stdexcept>
#include <string>

namespace {

thread_local std::string last_error;

// Runs `f` and turns any exception into LLRS_EXCEPTION with its message
// kept for llrs_last_error(). Never lets an exception escape.
template <typename F> int guard(F && f) noexcept {
    try {
        last_error.clear();
        f();
        return LLRS_OK;
    } catch (const std::bad_alloc &) {
        try { last_error = "out of memory (std::bad_alloc)"; } catch (...) {}
    } catch (const std::exception & e) {
        try { last_error = e.what(); } catch (...) {}
    } catch (...) {
        try { last_error = "unknown C++ exception"; } catch (...) {}
    }
    return LLRS_EXCEPTION;
}

}  // namespace

extern "C" {

const char * llrs_last_error(void) { return last_error.c_str(); }

int llrs_decode(llama_context * ctx, llama_batch batch, int32_t * out) {
    return guard([&] { *out = llama_decode(ctx, batch); });
}

int llrs_encode(llama_context * ctx, llama_batch batch, int32_t * out) {
    return guard([&] { *out = llama_encode(ctx, batch); });
}

int llrs_init_from_model(llama_model * model, llama_context_params params, llama_context ** out) {
    return guard([&] { *out = llama_init_from_model(model, params); });
}

int llrs_tokenize(const llama_vocab * vocab, const char * text, int32_t text_len, llama_token * tokens,
                  int32_t n_tokens_max, bool add_special, bool parse_special, int32_t * out) {
    return guard([&] { *out = llama_tokenize(vocab, text, text_len, tokens, n_tokens_max, add_special, parse_special); });
}

int llrs_detokenize(const llama_vocab * vocab, const llama_token * tokens, int32_t n_tokens, char * text,
                    int32_t text_len_max, bool remove_special, bool unparse_special, int32_t * out) {
    return guard([&] {
        *out = llama_detokenize(vocab, tokens, n_tokens, text, text_len_max, remove_special, unparse_special);
    });
}

int llrs_token_to_piece(const llama_vocab * vocab, llama_token token, char * buf, int32_t length, int32_t lstrip,
                        bool special, int32_t * out) {
    return guard([&] { *out = llama_token_to_piece(vocab, token, buf, length, lstrip, special); });
}

int llrs_chat_apply_template(const char * tmpl, const llama_chat_message * chat, size_t n_msg, bool add_ass,
                             char * buf, int32_t length, int32_t * out) {
    return guard([&] { *out = llama_chat_apply_template(tmpl, chat, n_msg, add_ass, buf, length); });
}

int llrs_sampler_apply(llama_sampler * smpl, llama_token_data_array * cur_p) {
    return guard([&] { llama_sampler_apply(smpl, cur_p); });
}

int llrs_sampler_accept(llama_sampler * smpl, llama_token token) {
    return guard([&] { llama_sampler_accept(smpl, token); });
}

int llrs_sampler_reset(llama_sampler * smpl) {
    return guard([&] { llama_sampler_reset(smpl); });
}

int llrs_sampler_init_grammar(const llama_vocab * vocab, const char * grammar_str, const char * grammar_root,
                              llama_sampler ** out) {
    return guard([&] { *out = llama_sampler_init_grammar(vocab, grammar_str, grammar_root); });
}

int llrs_state_seq_get_size(llama_context * ctx, llama_seq_id seq_id, size_t * out) {
    return guard([&] { *out = llama_state_seq_get_size(ctx, seq_id); });
}

int llrs_state_seq_get_data(llama_context * ctx, uint8_t * dst, size_t size, llama_seq_id seq_id, size_t * out) {
    return guard([&] { *out = llama_state_seq_get_data(ctx, dst, size, seq_id); });
}

int llrs_state_set_data(llama_context * ctx, const uint8_t * src, size_t size, size_t * out) {
    return guard([&] { *out = llama_state_set_data(ctx, src, size); });
}

int llrs_state_seq_set_data(llama_context * ctx, const uint8_t * src, size_t size, llama_seq_id seq_id, size_t * out) {
    return guard([&] { *out = llama_state_seq_set_data(ctx, src, size, seq_id); });
}

int llrs_adapter_lora_init(llama_model * model, const char * path_lora, llama_adapter_lora ** out) {
    return guard([&] { *out = llama_adapter_lora_init(model, path_lora); });
}

int llrs_set_adapters_lora(llama_context * ctx, llama_adapter_lora ** adapters, size_t n_adapters, float * scales,
                           int32_t * out) {
    return guard([&] { *out = llama_set_adapters_lora(ctx, adapters, n_adapters, scales); });
}

int llrs_test_throw(void) {
    return guard([] { throw std::runtime_error("llrs test exception"); });
}

}  // extern "C"
