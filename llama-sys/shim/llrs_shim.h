// Exception barrier between llama.cpp (C++) and Rust.
//
// llama.cpp's C API is declared `extern "C"`, but several of its functions
// can throw C++ exceptions (std::bad_alloc anywhere, std::runtime_error from
// a hostile tokenizer charsmap or a grammar sampler that is fed a token it
// rejects, std::out_of_range from containers). An exception that unwinds
// into Rust frames is undefined behaviour for a "C" import, and at best
// terminates the process. Every function here calls one llama.cpp function
// inside try/catch and reports an exception as LLRS_EXCEPTION, with its
// message available from llrs_last_error() on the same thread.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "llama.h"

#ifdef __cplusplus
extern "C" {
#endif

// Returned by every llrs_* function: the call completed (its result is in
// *out), or an exception was caught (*out is untouched).
#define LLRS_OK 0
#define LLRS_EXCEPTION 1

// The message of the last exception caught on this thread ("" if none).
// Valid until the next llrs_* call on this thread.
const char * llrs_last_error(void);

int llrs_decode(struct llama_context * ctx, struct llama_batch batch, int32_t * out);
int llrs_encode(struct llama_context * ctx, struct llama_batch batch, int32_t * out);
int llrs_init_from_model(struct llama_model * model, struct llama_context_params params, struct llama_context ** out);

int llrs_tokenize(const struct llama_vocab * vocab, const char * text, int32_t text_len, llama_token * tokens,
                  int32_t n_tokens_max, bool add_special, bool parse_special, int32_t * out);
int llrs_detokenize(const struct llama_vocab * vocab, const llama_token * tokens, int32_t n_tokens, char * text,
                    int32_t text_len_max, bool remove_special, bool unparse_special, int32_t * out);
int llrs_token_to_piece(const struct llama_vocab * vocab, llama_token token, char * buf, int32_t length,
                        int32_t lstrip, bool special, int32_t * out);

int llrs_sampler_apply(struct llama_sampler * smpl, llama_token_data_array * cur_p);
int llrs_sampler_accept(struct llama_sampler * smpl, llama_token token);
int llrs_sampler_reset(struct llama_sampler * smpl);
int llrs_sampler_init_grammar(const struct llama_vocab * vocab, const char * grammar_str, const char * grammar_root,
                              struct llama_sampler ** out);

int llrs_state_seq_get_size(struct llama_context * ctx, llama_seq_id seq_id, size_t * out);
int llrs_state_seq_get_data(struct llama_context * ctx, uint8_t * dst, size_t size, llama_seq_id seq_id,
                            size_t * out);
int llrs_state_set_data(struct llama_context * ctx, const uint8_t * src, size_t size, size_t * out);
int llrs_state_seq_set_data(struct llama_context * ctx, const uint8_t * src, size_t size, llama_seq_id seq_id,
                            size_t * out);

// LoRA adapters. llama_adapter_lora_init catches the std::exceptions of
// its own loader, but not everything around them (the adapter's allocation,
// registering it with the model); llama_set_adapters_lora allocates.
int llrs_adapter_lora_init(struct llama_model * model, const char * path_lora, struct llama_adapter_lora ** out);
int llrs_set_adapters_lora(struct llama_context * ctx, struct llama_adapter_lora ** adapters, size_t n_adapters,
                           float * scales, int32_t * out);

int llrs_chat_apply_template(const char * tmpl, const struct llama_chat_message * chat, size_t n_msg, bool add_ass,
                             char * buf, int32_t length, int32_t * out);

// For tests: throws std::runtime_error("llrs test exception") inside the
// barrier, so that the catch path can be exercised without a hostile model.
int llrs_test_throw(void);

#ifdef __cplusplus
}
#endif
