#include "model/chat_template.hpp"

#include <atomic>
#include <cstdio>

#include "model/error.hpp"

namespace longcat::model {
namespace {

[[noreturn]] void fail(const std::string& model_type, const std::string& message) {
    throw model_error("chat template (" + model_type + "): " + message);
}

std::string describe(size_t idx, const chat_message& m) {
    return "message " + std::to_string(idx) + " (role \"" + m.role + "\")";
}

}  // namespace

chat_template::chat_template(std::string_view model_type) : model_type_(model_type) {
    if (model_type_ != "longcat_flash") {
        throw model_error("chat template: unsupported model_type \"" + model_type_ +
                          "\" (known: \"longcat_flash\")");
    }
}

std::string chat_template::render(std::span<const chat_message> messages,
                                  bool add_generation_prompt) const {
    if (messages.empty()) fail(model_type_, "no messages");
    std::string out;
    size_t idx = 0;
    if (messages[0].role == "system") {
        out += "SYSTEM:";
        out += messages[0].content;
        idx = 1;
    }
    size_t round = 0;
    bool expect_user = true;
    for (; idx < messages.size(); ++idx) {
        const chat_message& m = messages[idx];
        if (m.role != "user" && m.role != "assistant") {
            if (m.role == "system") {
                fail(model_type_, describe(idx, m) + ": a system message may only come first");
            }
            fail(model_type_, describe(idx, m) +
                                  ": unknown role (expected system, user or "
                                  "assistant)");
        }
        if (expect_user) {
            if (m.role != "user") fail(model_type_, describe(idx, m) + ": expected a user message");
            if (!out.empty()) out.push_back(' ');
            out += "[Round " + std::to_string(round) + "] USER:";
            out += m.content;
        } else {
            if (m.role != "assistant") {
                fail(model_type_, describe(idx, m) + ": expected an assistant message");
            }
            out += " ASSISTANT:";
            out += m.content;
            out += kEndOfTurn;
            ++round;
        }
        expect_user = !expect_user;
    }
    if (round == 0 && expect_user) fail(model_type_, "no user message");
    if (add_generation_prompt) {
        if (expect_user) {
            fail(model_type_, "add_generation_prompt needs the last message to be from the user");
        }
        out += " ASSISTANT:";
    }
    return out;
}

std::string render_chat(std::span<const chat_message> messages, bool add_generation_prompt,
                        std::string_view model_type) {
    return chat_template(model_type).render(messages, add_generation_prompt);
}

bool log_jinja_template_ignored(const tokenizer& tok) {
    if (!tok.has_chat_template()) return false;
    static std::atomic<bool> logged{false};
    if (logged.exchange(true)) return false;
    std::fprintf(stderr,
                 "longcat: %s has a Jinja chat_template; it is not executed, the native LongCat "
                 "chat format is used instead\n",
                 tok.config().origin.c_str());
    return true;
}

}  // namespace longcat::model
