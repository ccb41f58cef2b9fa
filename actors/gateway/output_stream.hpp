// output_stream: one request's generated ids → the text the client may see.
// Owns: a detokenizer (model::stream_decoder, special tokens skipped, so EOS is never shown)
// and a stop_matcher over its text.
//
// Stop strings: the output is cut before the first stop string to complete in the text (the
// one that ends earliest; among those ending at the same place, the one that starts earliest),
// and the stop string itself is never emitted. Until a match is ruled out, the longest suffix
// of the pending text that could still begin a stop string is held back, so no emitted prefix
// ever extends past the final cut, however the text arrives in pieces.
// NOTES: stop strings and text are valid UTF-8, so a cut or a held suffix always falls on a
// character boundary; the emitted pieces stay valid UTF-8.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "model/tokenizer.hpp"

namespace longcat::gateway {

// Stop-string matching on text alone (no tokenizer).
class stop_matcher {
public:
    explicit stop_matcher(std::vector<std::string> stop_strings);

    struct result {
        std::string text;      // safe to emit now
        bool matched = false;  // a stop string completed: text ends right before it
    };
    // Appends text. After a match every push returns nothing.
    result push(std::string_view text);
    // End of the stream: returns the held text (no stop string can complete any more).
    std::string finish();
    bool matched() const { return matched_; }

private:
    std::vector<std::string> stops_;
    std::string held_;  // pending text that may be the beginning of a stop string
    bool matched_ = false;
};

class output_stream {
public:
    output_stream(const model::tokenizer& tokenizer, std::vector<std::string> stop_strings);

    struct piece {
        std::string text;
        bool stop_matched = false;  // the caller cancels the request, finish_reason "stop"
    };
    // Feeds newly generated ids. Ids after a stop match are ignored (not counted).
    piece push(std::span<const int32_t> ids);
    // The request ended: flushes the detokenizer and the held text.
    piece finish();

    // Ids consumed, up to and including the one that completed a stop string.
    int64_t num_tokens() const { return num_tokens_; }
    bool stop_matched() const { return matcher_.matched(); }

private:
    model::stream_decoder decoder_;
    stop_matcher matcher_;
    int64_t num_tokens_ = 0;
    bool finished_ = false;
};

}  // namespace longcat::gateway
