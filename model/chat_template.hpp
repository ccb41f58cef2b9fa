// chat_template: the LongCat-Flash chat format (longcat-flash.md §6), rendered natively in C++.
// The Jinja `chat_template` of tokenizer_config.json is never executed; the format is chosen by
// config.json's model_type instead. Stateless; safe to share between threads.
//
// The format (plain text, no role tokens):
//   [SYSTEM:{system} ][Round 0] USER:{q0} ASSISTANT:{r0}</longcat_s> [Round 1] USER:{q1} ASSISTANT:
// - an optional system message comes first, followed by one space;
// - rounds count from 0; each user message opens a round: "[Round k] USER:{q}";
// - an assistant reply is " ASSISTANT:{r}</longcat_s>"; the next round follows after one space;
// - add_generation_prompt appends " ASSISTANT:" after the last (user) message.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "model/tokenizer.hpp"

namespace longcat::model {

// One chat message; role is "system", "user" or "assistant".
struct chat_message {
    std::string role;
    std::string content;
};

class chat_template {
  public:
    // Picks the format for a config.json model_type. Only "longcat_flash" is known; any other
    // model_type is a model_error that names it.
    explicit chat_template(std::string_view model_type);

    // Renders the conversation. Messages must be: an optional system message, then user and
    // assistant alternating, starting with user. With add_generation_prompt the last message
    // must be from the user. Anything else is a model_error naming the offending message.
    std::string render(std::span<const chat_message> messages, bool add_generation_prompt) const;

    // The text that closes an assistant turn; generation stops there (EOS, id 2).
    static constexpr std::string_view kEndOfTurn = "</longcat_s>";

    const std::string& model_type() const { return model_type_; }

  private:
    std::string model_type_;
};

// chat_template(model_type).render(messages, add_generation_prompt).
std::string render_chat(std::span<const chat_message> messages, bool add_generation_prompt,
                        std::string_view model_type = "longcat_flash");

// When the tokenizer's tokenizer_config.json carries a Jinja chat_template, says once per
// process on stderr that it is not executed (the native format is used). Returns true when this
// call wrote the line.
bool log_jinja_template_ignored(const tokenizer& tok);

}  // namespace longcat::model
