#include "actors/gateway/prompt_builder.hpp"

#include <algorithm>
#include <exception>

#include "model/chat_template.hpp"

namespace longcat::gateway {

namespace {

proto::unexpected<api_error> fail(api_error_kind kind, std::string param, std::string message) {
    return proto::unexpected<api_error>(api_error{kind, std::move(message), std::move(param)});
}

}  // namespace

proto::expected<built_prompt, api_error> build_prompt(const normalized_request& request,
                                                      const model::tokenizer& tokenizer,
                                                      const prompt_limits& limits) {
    const bool chat = request.route == api_route::chat_completions;
    const std::string param = chat ? "messages" : "prompt";
    built_prompt out;
    if (chat) {
        std::vector<model::chat_message> messages;
        messages.reserve(request.messages.size());
        for (const chat_message& message : request.messages) messages.push_back({message.role, message.content});
        std::string text;
        try {
            text = model::render_chat(messages, /*add_generation_prompt=*/true, limits.model_type);
        } catch (const std::exception& e) {
            return fail(api_error_kind::invalid_value, param, std::string("messages: ") + e.what());
        }
        try {
            out.ids = tokenizer.encode(text, /*add_special_tokens=*/true);
        } catch (const std::exception& e) {
            return fail(api_error_kind::invalid_value, param, std::string("messages: cannot tokenize: ") + e.what());
        }
    } else if (request.prompt_is_ids) {
        out.ids = request.prompt_ids;
        for (size_t token_idx = 0; token_idx < out.ids.size(); ++token_idx) {
            if (limits.vocab_size > 0 && out.ids[token_idx] >= limits.vocab_size)
                return fail(api_error_kind::invalid_value, param,
                            "prompt[" + std::to_string(token_idx) + "]: token id " +
                                std::to_string(out.ids[token_idx]) + " is not below the vocabulary size " +
                                std::to_string(limits.vocab_size));
        }
    } else {
        try {
            out.ids = tokenizer.encode(request.prompt_text, /*add_special_tokens=*/true);
        } catch (const std::exception& e) {
            return fail(api_error_kind::invalid_value, param, std::string("prompt: cannot tokenize: ") + e.what());
        }
    }
    if (out.ids.empty()) return fail(api_error_kind::invalid_value, param, param + ": the prompt encodes to no tokens");

    const auto prompt_tokens = static_cast<int64_t>(out.ids.size());
    const int64_t room = limits.context_length - prompt_tokens;
    if (request.max_tokens) {
        out.max_tokens = *request.max_tokens;
    } else {
        out.max_tokens = chat ? std::min(limits.max_tokens_limit, room)
                              : std::min(limits.default_completion_max_tokens, limits.max_tokens_limit);
        out.max_tokens = std::max<int64_t>(out.max_tokens, 1);
    }
    if (prompt_tokens + out.max_tokens > limits.context_length) {
        return fail(api_error_kind::context_length_exceeded, param,
                    "this model's maximum context length is " + std::to_string(limits.context_length) +
                        " tokens; the " + param + " has " + std::to_string(prompt_tokens) +
                        " tokens and max_tokens is " + std::to_string(out.max_tokens) + " (" +
                        std::to_string(prompt_tokens + out.max_tokens) + " in all); shorten the " +
                        param + " or lower max_tokens");
    }
    return out;
}

}  // namespace longcat::gateway
