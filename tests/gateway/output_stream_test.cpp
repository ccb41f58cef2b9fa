// actors/gateway/output_stream: stop strings against a brute-force reference (the cut is before
// the stop string that completes first, whatever the chunking), no emitted prefix ever passing
// that cut (no partial match leaks), and the detokenizer path on the tiny model's tokenizer:
// random token ids, EOS never shown, stop strings across token boundaries.
#include <gtest/gtest.h>

#include <random>

#include "actors/gateway/output_stream.hpp"
#include "tests/gateway/gateway_fixture.hpp"

namespace longcat::gateway {
namespace {

// The reference: scan end positions left to right; the first end at which some stop string
// completes decides; among the stop strings ending there, the one starting earliest.
std::string reference_cut(const std::string& text, const std::vector<std::string>& stops, bool* matched) {
    for (size_t end = 1; end <= text.size(); ++end) {
        size_t best = std::string::npos;
        for (const std::string& stop : stops) {
            if (stop.empty() || stop.size() > end) continue;
            if (text.compare(end - stop.size(), stop.size(), stop) == 0) best = std::min(best, end - stop.size());
        }
        if (best != std::string::npos) {
            *matched = true;
            return text.substr(0, best);
        }
    }
    *matched = false;
    return text;
}

// Random pieces of whole characters (one multi-byte one), so every stop string is valid UTF-8.
const std::vector<std::string> kAlphabet = {"a", "b", " ", "\n", "é"};

std::string random_text(std::mt19937& rng, int max_chars) {
    std::string out;
    const int num_chars = std::uniform_int_distribution<int>(0, max_chars)(rng);
    for (int char_idx = 0; char_idx < num_chars; ++char_idx)
        out += kAlphabet[std::uniform_int_distribution<size_t>(0, kAlphabet.size() - 1)(rng)];
    return out;
}

// Splits at random character boundaries of `text` (kAlphabet characters only).
std::vector<std::string> random_chunks(std::mt19937& rng, const std::string& text) {
    std::vector<std::string> chunks;
    std::string current;
    for (size_t pos = 0; pos < text.size();) {
        const size_t len = (static_cast<unsigned char>(text[pos]) >= 0xC0) ? 2 : 1;
        current += text.substr(pos, len);
        pos += len;
        if (std::uniform_int_distribution<int>(0, 2)(rng) == 0) {
            chunks.push_back(current);
            current.clear();
        }
    }
    chunks.push_back(current);
    return chunks;
}

TEST(StopMatcher, MatchesBruteForceAndNeverLeaks) {
    std::mt19937 rng(1234);
    int num_matched = 0;
    for (int trial = 0; trial < 20000; ++trial) {
        const std::string text = random_text(rng, 40);
        std::vector<std::string> stops;
        const int num_stops = std::uniform_int_distribution<int>(1, 4)(rng);
        for (int stop_idx = 0; stop_idx < num_stops; ++stop_idx) {
            std::string stop = random_text(rng, 4);
            if (stop.empty()) stop = "a";
            stops.push_back(stop);
        }
        bool expect_match = false;
        const std::string expected = reference_cut(text, stops, &expect_match);
        num_matched += expect_match;

        stop_matcher matcher(stops);
        std::string emitted;
        bool matched = false;
        for (const std::string& chunk : random_chunks(rng, text)) {
            const stop_matcher::result result = matcher.push(chunk);
            emitted += result.text;
            ASSERT_TRUE(expected.starts_with(emitted))
                << "leaked past the cut: emitted '" << emitted << "', expected '" << expected << "'";
            if (result.matched) {
                matched = true;
                break;
            }
        }
        if (!matched) emitted += matcher.finish();
        ASSERT_EQ(matched, expect_match) << "text '" << text << "'";
        ASSERT_EQ(emitted, expected) << "text '" << text << "'";
        EXPECT_TRUE(matcher.push("more").text.empty() || !matched);  // nothing after a match
    }
    EXPECT_GT(num_matched, 5000);  // the alphabet is small: most trials hit a stop string
}

TEST(StopMatcher, HoldsOnlyWhatCouldStartAStopString) {
    stop_matcher matcher({"STOP", "xyz"});
    EXPECT_EQ(matcher.push("hello ST").text, "hello ");  // "ST" held
    EXPECT_EQ(matcher.push("ART").text, "START");         // ruled out: released
    EXPECT_EQ(matcher.push(" x").text, " ");
    const stop_matcher::result result = matcher.push("yz tail");
    EXPECT_TRUE(result.matched);
    EXPECT_EQ(result.text, "");
    EXPECT_EQ(matcher.finish(), "");
    stop_matcher no_stops({});
    EXPECT_EQ(no_stops.push("abc").text, "abc");  // nothing held without stop strings
}

class OutputStream : public ::testing::Test {
protected:
    const model::tokenizer& tok() const { return *fixture::shared_tiny_model().tokenizer; }
};

TEST_F(OutputStream, RandomTokensMatchTheReference) {
    std::mt19937 rng(99);
    const int32_t vocab = static_cast<int32_t>(fixture::shared_tiny_model().config().vocab_size);
    int num_matched = 0;
    for (int trial = 0; trial < 400; ++trial) {
        std::vector<int32_t> ids(std::uniform_int_distribution<size_t>(1, 40)(rng));
        for (int32_t& id : ids) id = std::uniform_int_distribution<int32_t>(0, vocab - 1)(rng);
        const std::string full = tok().decode(ids, /*skip_special_tokens=*/true);
        // Stop strings: pieces of the text (so they match somewhere) and random bytes of it.
        std::vector<std::string> stops;
        for (int stop_idx = 0; stop_idx < 2 && full.size() > 2; ++stop_idx) {
            size_t begin = std::uniform_int_distribution<size_t>(0, full.size() - 2)(rng);
            size_t len = std::uniform_int_distribution<size_t>(1, std::min<size_t>(6, full.size() - begin))(rng);
            // Keep the stop string on character boundaries (valid UTF-8).
            while (begin > 0 && (static_cast<unsigned char>(full[begin]) & 0xC0) == 0x80) --begin;
            while (begin + len < full.size() && (static_cast<unsigned char>(full[begin + len]) & 0xC0) == 0x80) ++len;
            stops.push_back(full.substr(begin, len));
        }
        bool expect_match = false;
        const std::string expected = reference_cut(full, stops, &expect_match);
        num_matched += expect_match;

        output_stream stream(tok(), stops);
        std::string emitted;
        bool matched = false;
        for (size_t begin = 0; begin < ids.size() && !matched;) {
            const size_t count = std::min(ids.size() - begin, std::uniform_int_distribution<size_t>(1, 3)(rng));
            const output_stream::piece piece = stream.push(std::span<const int32_t>(ids).subspan(begin, count));
            begin += count;
            emitted += piece.text;
            ASSERT_TRUE(expected.starts_with(emitted)) << "leaked past the cut";
            matched = piece.stop_matched;
        }
        if (!matched) {
            const output_stream::piece tail = stream.finish();
            emitted += tail.text;
            matched = tail.stop_matched;
        }
        ASSERT_EQ(matched, expect_match);
        ASSERT_EQ(emitted, expected);
        EXPECT_LE(stream.num_tokens(), static_cast<int64_t>(ids.size()));
        if (!expect_match) {
            EXPECT_EQ(stream.num_tokens(), static_cast<int64_t>(ids.size()));
        }
    }
    EXPECT_GT(num_matched, 300);
}

TEST_F(OutputStream, EosIsNotShownAndStopsSpanTokens) {
    const int32_t eos = tok().eos_id();
    ASSERT_GE(eos, 0);
    std::vector<int32_t> ids = tok().encode("hello world, hello moon", false);
    ASSERT_GT(ids.size(), 3u);
    std::vector<int32_t> with_eos = ids;
    with_eos.push_back(eos);
    output_stream plain(tok(), {});
    std::string text;
    for (const int32_t id : with_eos) text += plain.push(std::span<const int32_t>(&id, 1)).text;
    text += plain.finish().text;
    EXPECT_EQ(text, "hello world, hello moon");  // no "</longcat_s>"
    EXPECT_EQ(plain.num_tokens(), static_cast<int64_t>(with_eos.size()));

    // "o w" and "d, h" are not single tokens: the match spans token boundaries.
    for (const std::string stop : {"o w", "d, h", "moon"}) {
        output_stream stream(tok(), {stop});
        std::string out;
        bool matched = false;
        for (const int32_t id : ids) {
            const output_stream::piece piece = stream.push(std::span<const int32_t>(&id, 1));
            out += piece.text;
            if ((matched = piece.stop_matched)) break;
        }
        if (!matched) {
            const output_stream::piece tail = stream.finish();
            out += tail.text;
            matched = tail.stop_matched;
        }
        EXPECT_TRUE(matched) << stop;
        EXPECT_EQ(out, std::string("hello world, hello moon").substr(0, std::string("hello world, hello moon").find(stop)));
    }
}

}  // namespace
}  // namespace longcat::gateway
