// tokenizer: a HuggingFace `tokenizer.json` BPE tokenizer that gives the same ids as HF
// `tokenizers`, plus what `tokenizer_config.json` adds (BOS/EOS/PAD/UNK, chat template presence).
// Owns: the vocabulary, merges, compiled regexes and a word cache. Immutable after loading;
// copies share the same data and every const method is safe to call from many threads.
//
// Supported tokenizer.json components (anything else is a model_error naming the JSON path):
//   normalizer     NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, Replace, Prepend,
//                  Sequence, null
//   pre_tokenizer  ByteLevel, Split, Digits, Sequence, null
//   model          BPE (merges as "a b" strings or [a, b] lists, ignore_merges, byte_fallback,
//                  unk_token + fuse_unk, continuing_subword_prefix, end_of_word_suffix)
//   post_processor TemplateProcessing, ByteLevel, Sequence, null
//   decoder        ByteLevel, ByteFallback, Fuse, Strip, Replace, Sequence, null
//   added_tokens   single_word, lstrip, rstrip, normalized, special
//
// NOTES: the pipeline is HF's: added tokens are split out of the raw text first (leftmost
// longest), each remaining piece is normalized, normalized added tokens are split out of it,
// then the pre-tokenizers and the model run on what is left. Added tokens take the model's id
// when their content is in the model vocabulary, else the next free id (HF ignores the "id"
// written next to them; a file where the two differ is reproduced the HF way). "truncation" and
// "padding" are ignored (transformers overrides both on every call); BPE dropout > 0 is refused.
// Unicode normalization and categories come from utf8proc (Debian libutf8proc-dev).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace longcat::model {

// One entry of tokenizer.json's "added_tokens".
struct added_token {
    int32_t id = -1;
    std::string content;
    bool single_word = false;  // match only when not inside a word (\w on neither side)
    bool lstrip = false;       // the match swallows the whitespace on its left
    bool rstrip = false;       // the match swallows the whitespace on its right
    bool normalized = true;    // matched against the normalized text instead of the raw text
    bool special = false;      // dropped by decode(..., skip_special_tokens = true)
};

// What tokenizer_config.json says. Token fields are the token text ("" when unset); a field
// given as an AddedToken object contributes its "content".
//
// How add_bos_token / add_eos_token are applied: like transformers' PreTrainedTokenizerFast,
// the tokenizer.json post_processor is authoritative. Only when tokenizer.json has no
// post_processor (null) does encode(text, true) prepend BOS / append EOS when these are true.
struct tokenizer_config {
    std::string origin;  // the file name used in error messages; "" when no config was given
    std::string bos_token;
    std::string eos_token;
    std::string pad_token;
    std::string unk_token;
    std::optional<bool> add_bos_token;
    std::optional<bool> add_eos_token;
    bool has_chat_template = false;  // a Jinja template is present; it is never executed
    std::string chat_template;       // its text (the "default" one when a list is given)
};

class tokenizer {
  public:
    // Loads tokenizer.json; with the second argument also tokenizer_config.json.
    // Throws model_error on unreadable files, malformed JSON or unsupported components.
    static tokenizer load(const std::filesystem::path& tokenizer_json);
    static tokenizer load(const std::filesystem::path& tokenizer_json,
                          const std::filesystem::path& tokenizer_config_json);
    // Loads <dir>/tokenizer.json and <dir>/tokenizer_config.json when that file exists.
    static tokenizer load_dir(const std::filesystem::path& dir);
    // From JSON text in memory; `origin` / `config_origin` name the sources in error messages.
    static tokenizer from_json(std::string_view tokenizer_json, const std::string& origin);
    static tokenizer from_json(std::string_view tokenizer_json, const std::string& origin,
                               std::string_view config_json, const std::string& config_origin);

    // -- encoding ---------------------------------------------------------------
    // `text` must be valid UTF-8 (else model_error). With add_special_tokens the
    // post_processor's single template is applied (e.g. BOS in front).
    std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
    // A sequence pair, through the post_processor's pair template.
    std::vector<int32_t> encode_pair(std::string_view text_a, std::string_view text_b,
                                     bool add_special_tokens = true) const;

    // -- decoding ---------------------------------------------------------------
    // Runs the decoder chain. Ids that name no token (an embedding padded past the vocabulary)
    // decode to nothing, as in HF. Invalid byte sequences become U+FFFD, so the result is
    // always valid UTF-8.
    std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

    // -- vocabulary -------------------------------------------------------------
    // The number of embedding rows the tokenizer needs: the largest token id + 1.
    int64_t vocab_size() const;
    std::optional<int32_t> token_to_id(std::string_view token) const;
    // The token text (an added token's content); valid while this tokenizer lives.
    std::optional<std::string_view> id_to_token(int32_t id) const;
    bool is_special(int32_t id) const;
    const std::vector<added_token>& added_tokens() const;

    // Special ids, -1 when unknown. From tokenizer_config.json when given; otherwise BOS/EOS
    // fall back to the LongCat family tokens `<longcat_s>` / `</longcat_s>`, PAD to
    // `<longcat_pad>`, and UNK to the BPE model's unk_token, when those are in the vocabulary.
    int32_t bos_id() const;
    int32_t eos_id() const;
    int32_t pad_id() const;
    int32_t unk_id() const;

    const tokenizer_config& config() const;
    bool has_chat_template() const;
    const std::string& origin() const;

  private:
    struct impl;
    explicit tokenizer(std::shared_ptr<const impl> impl);
    std::shared_ptr<const impl> impl_;
    friend class stream_decoder;
};

// stream_decoder: incremental detokenization for one output stream.
// push(id) returns the text that became final with this token; flush() returns the rest at the
// end. Contract: the concatenation of every push and the flush equals
// tokenizer.decode(all ids, skip_special_tokens), and no returned piece ends inside a UTF-8
// character or on a U+FFFD that more bytes could still complete.
// Cost per push: two decodes of a short window (the tokens since the last emitted text).
// NOTES: like HF's DecodeStream, the window keeps the last emitted tokens as context, which is
// exact for every supported decoder except a Strip decoder with start > 1 after Fuse (no known
// tokenizer has one); a decoder that rewrites earlier text is a model_error.
class stream_decoder {
  public:
    explicit stream_decoder(const tokenizer& tok, bool skip_special_tokens = false);

    std::string push(int32_t id);
    std::string flush();
    // Forgets everything pushed so far (the next push starts a new text).
    void reset();

  private:
    std::shared_ptr<const tokenizer::impl> impl_;
    bool skip_special_tokens_;
    // layout: window_ = [tokens whose text was emitted (decode = prefix_) | pending tokens]
    std::vector<int32_t> window_;
    size_t prefix_count_ = 0;
    std::string prefix_;
    bool tail_is_byte_ = false;  // the last contributing token is a <0xNN> byte token
};

}  // namespace longcat::model
