// Tests for model/chat_template: the exact LongCat strings, role-order errors, model_type.
#include "model/chat_template.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "model/error.hpp"
#include "model/tokenizer.hpp"

namespace longcat::model {
namespace {

using messages = std::vector<chat_message>;

TEST(chat_template, single_turn_without_system) {
    const messages m{{"user", "Hello"}};
    EXPECT_EQ(render_chat(m, true), "[Round 0] USER:Hello ASSISTANT:");
}

TEST(chat_template, single_turn_with_system) {
    const messages m{{"system", "You are a helpful assistant."}, {"user", "What is 2+2?"}};
    EXPECT_EQ(render_chat(m, true),
              "SYSTEM:You are a helpful assistant. [Round 0] USER:What is 2+2? ASSISTANT:");
}

TEST(chat_template, multi_turn_with_system) {
    const messages m{{"system", "S"}, {"user", "q0"},      {"assistant", "r0"},
                     {"user", "q1"},  {"assistant", "r1"}, {"user", "q2"}};
    EXPECT_EQ(render_chat(m, true),
              "SYSTEM:S [Round 0] USER:q0 ASSISTANT:r0</longcat_s> [Round 1] USER:q1 "
              "ASSISTANT:r1</longcat_s> [Round 2] USER:q2 ASSISTANT:");
}

TEST(chat_template, multi_turn_without_system) {
    const messages m{{"user", "Hi"}, {"assistant", "Hello! How can I help?"}, {"user", "Bye"}};
    EXPECT_EQ(render_chat(m, true),
              "[Round 0] USER:Hi ASSISTANT:Hello! How can I help?</longcat_s> [Round 1] "
              "USER:Bye ASSISTANT:");
}

TEST(chat_template, without_generation_prompt) {
    const messages finished{{"user", "q0"}, {"assistant", "r0"}};
    EXPECT_EQ(render_chat(finished, false), "[Round 0] USER:q0 ASSISTANT:r0</longcat_s>");
    const messages open{{"system", "S"}, {"user", "q0"}};
    EXPECT_EQ(render_chat(open, false), "SYSTEM:S [Round 0] USER:q0");
}

TEST(chat_template, contents_are_verbatim) {
    const messages m{{"user", " multi\nline  <longcat_s> {{ not jinja }} "}};
    EXPECT_EQ(render_chat(m, true),
              "[Round 0] USER: multi\nline  <longcat_s> {{ not jinja }}  ASSISTANT:");
}

void expect_error(const messages& m, bool add_generation_prompt, const std::string& needle) {
    try {
        render_chat(m, add_generation_prompt);
        ADD_FAILURE() << "expected model_error containing " << needle;
    } catch (const model_error& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("longcat_flash"), std::string::npos) << e.what();
    }
}

TEST(chat_template, bad_role_order) {
    expect_error({}, true, "no messages");
    expect_error({{"system", "S"}}, true, "no user message");
    expect_error({{"assistant", "r"}}, true, "message 0 (role \"assistant\"): expected a user");
    expect_error({{"user", "a"}, {"user", "b"}}, true,
                 "message 1 (role \"user\"): expected an assistant");
    expect_error({{"user", "a"}, {"system", "S"}}, true,
                 "message 1 (role \"system\"): a system message may only come first");
    expect_error({{"system", "S"}, {"system", "T"}, {"user", "q"}}, true,
                 "a system message may only come first");
    expect_error({{"user", "a"}, {"tool", "x"}}, true, "message 1 (role \"tool\"): unknown role");
    expect_error({{"user", "a"}, {"assistant", "b"}}, true,
                 "add_generation_prompt needs the last message to be from the user");
}

TEST(chat_template, unsupported_model_type) {
    try {
        chat_template tmpl("llama");
        FAIL() << "expected model_error";
    } catch (const model_error& e) {
        EXPECT_NE(std::string(e.what()).find("model_type \"llama\""), std::string::npos)
            << e.what();
    }
    EXPECT_EQ(chat_template("longcat_flash").model_type(), "longcat_flash");
}

TEST(chat_template, end_of_turn_encodes_to_eos) {
    const tokenizer tok =
        tokenizer::load(std::string(LONGCAT_SOURCE_DIR) + "/model/tokenizers/gpt2/tokenizer.json");
    const messages m{{"user", "q0"}, {"assistant", "r0"}, {"user", "q1"}};
    const auto ids = tok.encode(render_chat(m, true), false);
    EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.eos_id()), 1);
    EXPECT_EQ(tok.token_to_id(chat_template::kEndOfTurn), tok.eos_id());
}

TEST(chat_template, jinja_template_is_logged_once) {
    const auto dir = std::filesystem::path(::testing::TempDir()) / "longcat_chat_template_log";
    std::filesystem::create_directories(dir);
    std::filesystem::copy_file(
        std::string(LONGCAT_SOURCE_DIR) + "/model/tokenizers/gpt2/tokenizer.json",
        dir / "tokenizer.json", std::filesystem::copy_options::overwrite_existing);
    std::ofstream(dir / "tokenizer_config.json") << R"({"chat_template": "{{ messages }}"})";
    const tokenizer with_template = tokenizer::load_dir(dir);
    const tokenizer without_template = tokenizer::load(dir / "tokenizer.json");

    EXPECT_FALSE(log_jinja_template_ignored(without_template));
    ::testing::internal::CaptureStderr();
    const bool first = log_jinja_template_ignored(with_template);
    const bool second = log_jinja_template_ignored(with_template);
    const std::string logged = ::testing::internal::GetCapturedStderr();
    EXPECT_TRUE(first);
    EXPECT_FALSE(second);
    EXPECT_NE(logged.find("tokenizer_config.json has a Jinja chat_template; it is not executed"),
              std::string::npos)
        << logged;
}

}  // namespace
}  // namespace longcat::model
