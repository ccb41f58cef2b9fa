// prompt_builder: a normalized request → the prompt's token ids and the resolved max_tokens.
// Owns nothing: renders chat messages with the native LongCat chat template
// (model::render_chat) and encodes with the model's tokenizer exactly as `longcat generate
// --chat` does (BOS from the tokenizer's post-processor), so the ids equal the engine's.
// Checks the prompt against the context: prompt + max_tokens must fit (400 naming it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "actors/gateway/openai_protocol.hpp"
#include "model/tokenizer.hpp"

namespace longcat::gateway {

struct prompt_limits {
    std::string model_type = "longcat_flash";  // config.json model_type (picks the chat format)
    int64_t context_length = 4096;  // max_model_len, else config.json max_position_embeddings
    int64_t vocab_size = 0;         // token ids must be below it (0 = not checked)
    int64_t max_tokens_limit = 4096;
    int64_t default_completion_max_tokens = 16;  // /v1/completions without max_tokens (OpenAI's)
};

struct built_prompt {
    std::vector<int32_t> ids;
    int64_t max_tokens = 0;  // as asked, or the default: chat → all the context left (capped by
                             // max_tokens_limit), completions → default_completion_max_tokens
};

// Never throws: tokenizer and template errors become invalid_value errors naming the field.
proto::expected<built_prompt, api_error> build_prompt(const normalized_request& request,
                                                      const model::tokenizer& tokenizer,
                                                      const prompt_limits& limits);

}  // namespace longcat::gateway
