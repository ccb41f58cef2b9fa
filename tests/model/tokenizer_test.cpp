// Tests for model/tokenizer: HF golden ids, decoding, streaming, added-token flags, errors.
#include "model/tokenizer.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "model/error.hpp"

namespace longcat::model {
namespace {

using json = nlohmann::json;

std::string source_path(const std::string& rel) {
    return std::string(LONGCAT_SOURCE_DIR) + "/" + rel;
}

json read_json(const std::string& path) {
    std::ifstream in(path);
    EXPECT_TRUE(in.good()) << path;
    return json::parse(in);
}

// -- UTF-8 check used by the streaming tests ------------------------------------------------
bool valid_utf8(std::string_view s) {
    size_t pos = 0;
    while (pos < s.size()) {
        const auto b0 = static_cast<unsigned char>(s[pos]);
        size_t need = 0;
        uint32_t cp = 0;
        if (b0 < 0x80) {
            ++pos;
            continue;
        } else if (b0 >= 0xC2 && b0 <= 0xDF) {
            need = 1;
            cp = b0 & 0x1F;
        } else if (b0 >= 0xE0 && b0 <= 0xEF) {
            need = 2;
            cp = b0 & 0x0F;
        } else if (b0 >= 0xF0 && b0 <= 0xF4) {
            need = 3;
            cp = b0 & 0x07;
        } else {
            return false;
        }
        if (pos + need >= s.size()) return false;
        for (size_t k = 1; k <= need; ++k) {
            const auto b = static_cast<unsigned char>(s[pos + k]);
            if ((b & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (b & 0x3F);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF)) {
            return false;
        }
        pos += need + 1;
    }
    return true;
}

std::vector<int32_t> to_ids(const json& j) { return j.get<std::vector<int32_t>>(); }

// Streams `ids` and checks every piece is valid UTF-8 and the pieces add up to decode().
void check_stream(const tokenizer& tok, const std::vector<int32_t>& ids, bool skip,
                  const std::string& label) {
    stream_decoder stream(tok, skip);
    std::string joined;
    for (size_t idx = 0; idx < ids.size(); ++idx) {
        const std::string piece = stream.push(ids[idx]);
        ASSERT_TRUE(valid_utf8(piece)) << label << " push " << idx;
        joined += piece;
    }
    const std::string rest = stream.flush();
    ASSERT_TRUE(valid_utf8(rest)) << label << " flush";
    joined += rest;
    EXPECT_EQ(joined, tok.decode(ids, skip)) << label;
}

class tokenizer_golden : public ::testing::TestWithParam<std::string> {};

TEST_P(tokenizer_golden, encode_decode_and_stream_match_hf) {
    const json doc = read_json(source_path("tests/golden/data/tokenizers/" + GetParam() + ".json"));
    const tokenizer tok = tokenizer::load(source_path(doc["tokenizer"].get<std::string>()));
    size_t num_cases = 0;
    for (const auto& c : doc["cases"]) {
        const std::string text = c["text"].get<std::string>();
        const auto ids = to_ids(c["ids"]);
        const auto ids_special = to_ids(c["ids_special"]);
        EXPECT_EQ(tok.encode(text, false), ids) << "text: " << json(text).dump();
        EXPECT_EQ(tok.encode(text, true), ids_special) << "text: " << json(text).dump();
        EXPECT_EQ(tok.decode(ids, false), c["decoded"].get<std::string>())
            << "text: " << json(text).dump();
        EXPECT_EQ(tok.decode(ids, true), c["decoded_skip"].get<std::string>())
            << "text: " << json(text).dump();
        check_stream(tok, ids, false, "stream " + json(text).dump());
        check_stream(tok, ids_special, true, "stream skip " + json(text).dump());
        ++num_cases;
    }
    EXPECT_GT(num_cases, 100u);
    for (const auto& p : doc["pairs"]) {
        EXPECT_EQ(tok.encode_pair(p["a"].get<std::string>(), p["b"].get<std::string>(), true),
                  to_ids(p["ids_special"]))
            << p.dump();
    }
}

TEST_P(tokenizer_golden, round_trip_where_hf_round_trips) {
    const json doc = read_json(source_path("tests/golden/data/tokenizers/" + GetParam() + ".json"));
    const tokenizer tok = tokenizer::load(source_path(doc["tokenizer"].get<std::string>()));
    size_t num_round_trips = 0;
    for (const auto& c : doc["cases"]) {
        const std::string text = c["text"].get<std::string>();
        if (c["decoded"].get<std::string>() != text) continue;
        EXPECT_EQ(tok.decode(tok.encode(text, false)), text) << json(text).dump();
        ++num_round_trips;
    }
    EXPECT_GT(num_round_trips, 50u);
}

INSTANTIATE_TEST_SUITE_P(hf, tokenizer_golden, ::testing::Values("gpt2", "llama3", "bytefallback"),
                         [](const auto& info) { return info.param; });

// -- synthetic tokenizers: the components the shipped ones do not use ------------------------
// Six small tokenizer.json variants (Split behaviours, invert, Digits, NFKC/NFD/StripAccents,
// Lowercase, Strip, Replace, Prepend, continuing_subword_prefix + end_of_word_suffix, string
// merges, unk without fuse, ignore_merges, byte_fallback, ByteLevel with add_prefix_space,
// Sequence post-processor, null decoder, Strip/Replace decoders; added tokens with
// single_word, lstrip, rstrip, normalized) and the ids HF tokenizers 0.23.3 gives. Each vocab
// is stored as a recipe: "<unk>", the printable ASCII characters, the recipe's derived tokens
// (byte-level space/newline/tab, prefix + char, char + suffix, prefix + char + suffix), then
// doc.model.vocab (a list, ids continue in order).
// Generated with HF tokenizers 0.23.3 (see the comment above); one variant per block.
constexpr const char* kSyntheticCases =
    R"j({)j"
    R"j("normalizers_removed_null_decoder":{"recipe":{},"doc":{"version":"1.0","truncation":)j"
    R"j(null,"padding":null,"added_tokens":[{"id":109,"content":"<s>","single_word":false,"l)j"
    R"j(strip":false,"rstrip":false,"normalized":false,"special":true},{"id":110,"content":")j"
    R"j(</s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special")j"
    R"j(:true},{"id":101,"content":"cat","single_word":true,"lstrip":false,"rstrip":false,"n)j"
    R"j(ormalized":false,"special":false},{"id":111,"content":"[M]","single_word":false,"lst)j"
    R"j(rip":true,"rstrip":false,"normalized":false,"special":true},{"id":112,"content":"[R])j"
    R"j(","single_word":false,"lstrip":false,"rstrip":true,"normalized":false,"special":fals)j"
    R"j(e},{"id":113,"content":"Dog","single_word":false,"lstrip":false,"rstrip":false,"norm)j"
    R"j(alized":true,"special":false}],"normalizer":{"type":"Sequence","normalizers":[{"type)j"
    R"j(":"NFKC"},{"type":"Lowercase"},{"type":"Strip","strip_left":true,"strip_right":true})j"
    R"j(]},"pre_tokenizer":{"type":"Split","pattern":{"String":" "},"behavior":"Removed","in)j"
    R"j(vert":false},"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":nu)j"
    R"j(ll,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"f)j"
    R"j(use_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":["th","the","in",)j"
    R"j("ing","er","at","cat","on","12","<0xC3>","<0xA9>","<0xE2>","<0x82>","<0xAC>"],"merge)j"
    R"j(s":[["t","h"],["th","e"],["i","n"],["in","g"],["e","r"],["a","t"],["c","at"],["o","n)j"
    R"j("],["1","2"]]}},"cases":[["the cat sat",[96,101,83,100],[96,101,83,100],"the cat s a)j"
    R"j(t"],["The Cat  ",[96,101],[96,101],"the cat"],["concatenate cat, catalog",[67,102,10)j"
    R"j(1,69,78,100,69,101,12,101,65,76,79,71],[67,102,101,69,78,100,69,101,12,101,65,76,79,)j"
    R"j(71],"c on cat e n at e cat , cat a l o g"],["  Leading and trailing  ",[76,69,65,68,)j"
    R"j(98,65,78,68,84,82,65,73,76,98],[76,69,65,68,98,65,78,68,84,82,65,73,76,98],"l e a d )j"
    R"j(ing a n d t r a i l ing"],["x [M] y",[88,111,89],[88,111,89],"x [M] y","x y"],["x   )j"
    R"j([M]y",[88,111,89],[88,111,89],"x [M] y","x y"],["a [R]   b",[65,112,66],[65,112,66],)j"
    R"j("a [R] b"],["[R]\t\nz",[112,90],[112,90],"[R] z"],["Dog dog DOG hotDog",[113,113,113)j"
    R"j(,72,79,84,113],[113,113,113,72,79,84,113],"dog dog dog h o t dog"],["thing-thing_thi)j"
    R"j(ng",[95,98,13,95,98,63,95,98],[95,98,13,95,98,63,95,98],"th ing - th ing _ th ing"],)j"
    R"j(["12,345.67! ok? yes.",[103,12,19,20,21,14,22,23,1,79,75,31,89,69,83,14],[103,12,19,)j"
    R"j(20,21,14,22,23,1,79,75,31,89,69,83,14],"12 , 3 4 5 . 6 7 ! o k ? y e s ."],["1234 x1)j"
    R"j(2y 9",[103,19,20,88,103,89,25],[103,19,20,88,103,89,25],"12 3 4 x 12 y 9"],["café na)j"
    R"j(ïve ﬁ",[67,65,70,0,78,65,0,86,69,70,73],[67,65,70,0,78,65,0,86,69,70,73],"c a f <unk)j"
    R"j(> n a <unk> v e f i"],["Ⅻ ２３",[88,73,73,18,19],[88,73,73,18,19],"x i i 2 3"],["é€",[)j"
    R"j(0,0],[0,0],"<unk> <unk>"],["",[],[],""],[" ",[],[],""],["<s>the</s>",[109,96,110],[1)j"
    R"j(09,96,110],"<s> the </s>","the"],["tab\tnew\nline",[84,65,66,0,78,69,87,0,76,97,69],)j"
    R"j([84,65,66,0,78,69,87,0,76,97,69],"t a b <unk> n e w <unk> l in e"],["done!!! ...",[6)j"
    R"j(8,102,69,1,1,1,14,14,14],[68,102,69,1,1,1,14,14,14],"d on e ! ! ! . . ."],["İstanbul)j"
    R"j( ΣΑΣ",[73,0,83,84,65,78,66,85,76,0,0,0],[73,0,83,84,65,78,66,85,76,0,0,0],"i <unk> s)j"
    R"j( t a n b u l <unk> <unk> <unk>"]],"pair":[96,101,88,111,89]},)j"
    R"j("merged_with_previous_digits":{"recipe":{},"doc":{"version":"1.0","truncation":null,)j"
    R"j("padding":null,"added_tokens":[{"id":109,"content":"<s>","single_word":false,"lstrip)j"
    R"j(":false,"rstrip":false,"normalized":false,"special":true},{"id":110,"content":"</s>")j"
    R"j(,"single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true)j"
    R"j(},{"id":101,"content":"cat","single_word":true,"lstrip":false,"rstrip":false,"normal)j"
    R"j(ized":false,"special":false},{"id":111,"content":"[M]","single_word":false,"lstrip":)j"
    R"j(true,"rstrip":false,"normalized":false,"special":true},{"id":112,"content":"[R]","si)j"
    R"j(ngle_word":false,"lstrip":false,"rstrip":true,"normalized":false,"special":false},{")j"
    R"j(id":113,"content":"Dog","single_word":false,"lstrip":false,"rstrip":false,"normalize)j"
    R"j(d":true,"special":false}],"normalizer":null,"pre_tokenizer":{"type":"Sequence","pret)j"
    R"j(okenizers":[{"type":"Split","pattern":{"Regex":"[,.!?]"},"behavior":"MergedWithPrevi)j"
    R"j(ous","invert":false},{"type":"Digits","individual_digits":false}]},"post_processor":)j"
    R"j(null,"decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"Regex":")j"
    R"j(a+"},"content":"A"},{"type":"Fuse"},{"type":"Strip","content":"t","start":2,"stop":0)j"
    R"j(}]},"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_pre)j"
    R"j(fix":null,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_m)j"
    R"j(erges":false,"vocab":["th","the","in","ing","er","at","cat","on","12","<0xC3>","<0xA)j"
    R"j(9>","<0xE2>","<0x82>","<0xAC>"],"merges":[["t","h"],["th","e"],["i","n"],["in","g"],)j"
    R"j(["e","r"],["a","t"],["c","at"],["o","n"],["1","2"]]}},"cases":[["the cat sat",[96,0,)j"
    R"j(101,0,83,100],[96,0,101,0,83,100],"he<unk>cAt<unk>sAt"],["The Cat  ",[52,72,69,0,35,)j"
    R"j(100,0,0],[52,72,69,0,35,100,0,0],"The<unk>CAt<unk><unk>"],["concatenate cat, catalog)j"
    R"j(",[67,102,101,69,78,100,69,0,101,12,0,101,65,76,79,71],[67,102,101,69,78,100,69,0,10)j"
    R"j(1,12,0,101,65,76,79,71],"concAtenAte<unk>cAt,<unk>cAtAlog"],["  Leading and trailing)j"
    R"j(  ",[0,0,44,69,65,68,98,0,65,78,68,0,84,82,65,73,76,98,0,0],[0,0,44,69,65,68,98,0,65)j"
    R"j(,78,68,0,84,82,65,73,76,98,0,0],"<unk><unk>LeAding<unk>And<unk>trAiling<unk><unk>"],)j"
    R"j(["x [M] y",[88,111,0,89],[88,111,0,89],"x[M]<unk>y","x<unk>y"],["x   [M]y",[88,111,8)j"
    R"j(9],[88,111,89],"x[M]y","xy"],["a [R]   b",[65,0,112,66],[65,0,112,66],"A<unk>[R]b"],)j"
    R"j(["[R]\t\nz",[112,90],[112,90],"[R]z"],["Dog dog DOG hotDog",[113,0,68,79,71,0,36,47,)j"
    R"j(39,0,72,79,84,113],[113,0,68,79,71,0,36,47,39,0,72,79,84,113],"Dog<unk>dog<unk>DOG<u)j"
    R"j(nk>hotDog"],["thing-thing_thing",[95,98,13,95,98,63,95,98],[95,98,13,95,98,63,95,98])j"
    R"j(,"hing-thing_thing"],["12,345.67! ok? yes.",[103,12,19,20,21,14,22,23,1,0,79,75,31,0)j"
    R"j(,89,69,83,14],[103,12,19,20,21,14,22,23,1,0,79,75,31,0,89,69,83,14],"12,345.67!<unk>)j"
    R"j(ok?<unk>yes."],["1234 x12y 9",[103,19,20,0,88,103,89,0,25],[103,19,20,0,88,103,89,0,)j"
    R"j(25],"1234<unk>x12y<unk>9"],["café naïve ﬁ",[67,65,70,0,0,78,65,0,86,69,0,0],[67,65,7)j"
    R"j(0,0,0,78,65,0,86,69,0,0],"cAf<unk><unk>nA<unk>ve<unk><unk>"],["Ⅻ ２３",[0,0,0,0],[0,0,)j"
    R"j(0,0],"<unk><unk><unk><unk>"],["é€",[0,0],[0,0],"<unk><unk>"],["",[],[],""],[" ",[0],)j"
    R"j([0],"<unk>"],["<s>the</s>",[109,96,110],[109,96,110],"<s>the</s>","he"],["tab\tnew\n)j"
    R"j(line",[84,65,66,0,78,69,87,0,76,97,69],[84,65,66,0,78,69,87,0,76,97,69],"Ab<unk>new<)j"
    R"j(unk>line"],["done!!! ...",[68,102,69,1,1,1,0,14,14,14],[68,102,69,1,1,1,0,14,14,14],)j"
    R"j("done!!!<unk>..."],["İstanbul ΣΑΣ",[0,83,84,65,78,66,85,76,0,0,0,0],[0,83,84,65,78,6)j"
    R"j(6,85,76,0,0,0,0],"<unk>stAnbul<unk><unk><unk><unk>"]],"pair":[96,0,101,88,111,0,89]})j"
    R"j(,)j"
    R"j("merged_with_next_contiguous_invert":{"recipe":{},"doc":{"version":"1.0","truncation)j"
    R"j(":null,"padding":null,"added_tokens":[{"id":109,"content":"<s>","single_word":false,)j"
    R"j("lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id":110,"content")j"
    R"j(:"</s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"specia)j"
    R"j(l":true},{"id":101,"content":"cat","single_word":true,"lstrip":false,"rstrip":false,)j"
    R"j("normalized":false,"special":false},{"id":111,"content":"[M]","single_word":false,"l)j"
    R"j(strip":true,"rstrip":false,"normalized":false,"special":true},{"id":112,"content":"[)j"
    R"j(R]","single_word":false,"lstrip":false,"rstrip":true,"normalized":false,"special":fa)j"
    R"j(lse},{"id":113,"content":"Dog","single_word":false,"lstrip":false,"rstrip":false,"no)j"
    R"j(rmalized":true,"special":false}],"normalizer":{"type":"Replace","pattern":{"Regex":")j"
    R"j(\\s+"},"content":" "},"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"S)j"
    R"j(plit","pattern":{"Regex":"[-_ ]"},"behavior":"MergedWithNext","invert":false},{"type)j"
    R"j(":"Split","pattern":{"Regex":"[a-z]+"},"behavior":"Contiguous","invert":true}]},"pos)j"
    R"j(t_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null,"unk_token":"<)j"
    R"j(unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":false,"b)j"
    R"j(yte_fallback":false,"ignore_merges":false,"vocab":["th","the","in","ing","er","at",")j"
    R"j(cat","on","12","<0xC3>","<0xA9>","<0xE2>","<0x82>","<0xAC>"],"merges":[["t","h"],["t)j"
    R"j(h","e"],["i","n"],["in","g"],["e","r"],["a","t"],["c","at"],["o","n"],["1","2"]]}},")j"
    R"j(cases":[["the cat sat",[96,0,101,0,83,100],[96,0,101,0,83,100],"the <unk> cat <unk> )j"
    R"j(s at"],["The Cat  ",[52,72,69,0,35,100,0],[52,72,69,0,35,100,0],"T h e <unk> C at <u)j"
    R"j(nk>"],["concatenate cat, catalog",[67,102,101,69,78,100,69,0,101,12,0,101,65,76,79,7)j"
    R"j(1],[67,102,101,69,78,100,69,0,101,12,0,101,65,76,79,71],"c on cat e n at e <unk> cat)j"
    R"j( , <unk> cat a l o g"],["  Leading and trailing  ",[0,44,69,65,68,98,0,65,78,68,0,84)j"
    R"j(,82,65,73,76,98,0],[0,44,69,65,68,98,0,65,78,68,0,84,82,65,73,76,98,0],"<unk> L e a )j"
    R"j(d ing <unk> a n d <unk> t r a i l ing <unk>"],["x [M] y",[88,111,0,89],[88,111,0,89])j"
    R"j(,"x [M] <unk> y","x <unk> y"],["x   [M]y",[88,111,89],[88,111,89],"x [M] y","x y"],[)j"
    R"j("a [R]   b",[65,0,112,66],[65,0,112,66],"a <unk> [R] b"],["[R]\t\nz",[112,90],[112,9)j"
    R"j(0],"[R] z"],["Dog dog DOG hotDog",[113,0,68,79,71,0,36,47,39,0,72,79,84,113],[113,0,)j"
    R"j(68,79,71,0,36,47,39,0,72,79,84,113],"Dog <unk> d o g <unk> D O G <unk> h o t Dog"],[)j"
    R"j("thing-thing_thing",[95,98,13,95,98,63,95,98],[95,98,13,95,98,63,95,98],"th ing - th)j"
    R"j( ing _ th ing"],["12,345.67! ok? yes.",[103,12,19,20,21,14,22,23,1,0,79,75,31,0,89,6)j"
    R"j(9,83,14],[103,12,19,20,21,14,22,23,1,0,79,75,31,0,89,69,83,14],"12 , 3 4 5 . 6 7 ! <)j"
    R"j(unk> o k ? <unk> y e s ."],["1234 x12y 9",[103,19,20,0,88,103,89,0,25],[103,19,20,0,)j"
    R"j(88,103,89,0,25],"12 3 4 <unk> x 12 y <unk> 9"],["café naïve ﬁ",[67,65,70,0,0,78,65,0)j"
    R"j(,86,69,0,0],[67,65,70,0,0,78,65,0,86,69,0,0],"c a f <unk> <unk> n a <unk> v e <unk> )j"
    R"j(<unk>"],["Ⅻ ２３",[0,0,0,0],[0,0,0,0],"<unk> <unk> <unk> <unk>"],["é€",[0,0],[0,0],"<u)j"
    R"j(nk> <unk>"],["",[],[],""],[" ",[0],[0],"<unk>"],["<s>the</s>",[109,96,110],[109,96,1)j"
    R"j(10],"<s> the </s>","the"],["tab\tnew\nline",[84,65,66,0,78,69,87,0,76,97,69],[84,65,)j"
    R"j(66,0,78,69,87,0,76,97,69],"t a b <unk> n e w <unk> l in e"],["done!!! ...",[68,102,6)j"
    R"j(9,1,1,1,0,14,14,14],[68,102,69,1,1,1,0,14,14,14],"d on e ! ! ! <unk> . . ."],["İstan)j"
    R"j(bul ΣΑΣ",[0,83,84,65,78,66,85,76,0,0,0,0],[0,83,84,65,78,66,85,76,0,0,0,0],"<unk> s )j"
    R"j(t a n b u l <unk> <unk> <unk> <unk>"]],"pair":[96,0,101,88,111,0,89]},)j"
    R"j("byte_level_prefix_space_template":{"recipe":{"byte_level":true},"doc":{"version":"1)j"
    R"j(.0","truncation":null,"padding":null,"added_tokens":[{"id":116,"content":"<s>","sing)j"
    R"j(le_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},{"id)j"
    R"j(":117,"content":"</s>","single_word":false,"lstrip":false,"rstrip":false,"normalized)j"
    R"j(":false,"special":true},{"id":104,"content":"cat","single_word":true,"lstrip":false,)j"
    R"j("rstrip":false,"normalized":false,"special":false},{"id":118,"content":"[M]","single)j"
    R"j(_word":false,"lstrip":true,"rstrip":false,"normalized":false,"special":true},{"id":1)j"
    R"j(19,"content":"[R]","single_word":false,"lstrip":false,"rstrip":true,"normalized":fal)j"
    R"j(se,"special":false},{"id":120,"content":"Dog","single_word":false,"lstrip":false,"rs)j"
    R"j(trip":false,"normalized":true,"special":false}],"normalizer":null,"pre_tokenizer":{")j"
    R"j(type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},"pos)j"
    R"j(t_processor":{"type":"Sequence","processors":[{"type":"ByteLevel","add_prefix_space")j"
    R"j(:true,"trim_offsets":false,"use_regex":true},{"type":"TemplateProcessing","single":[)j"
    R"j({"Sequence":{"id":"A","type_id":0}},{"SpecialToken":{"id":"</s>","type_id":0}}],"pai)j"
    R"j(r":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}},{")j"
    R"j(SpecialToken":{"id":"</s>","type_id":0}},{"Sequence":{"id":"B","type_id":1}},{"Speci)j"
    R"j(alToken":{"id":"</s>","type_id":1}}],"special_tokens":{"<s>":{"id":"<s>","ids":[116])j"
    R"j(,"tokens":["<s>"]},"</s>":{"id":"</s>","ids":[117],"tokens":["</s>"]}}}]},"decoder":)j"
    R"j({"type":"ByteLevel","add_prefix_space":true,"trim_offsets":true,"use_regex":true},"m)j"
    R"j(odel":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":n)j"
    R"j(ull,"end_of_word_suffix":null,"fuse_unk":false,"byte_fallback":false,"ignore_merges")j"
    R"j(:false,"vocab":["Ġt","Ġth","Ġthe","in","ing","at","cat","Ġc","Ġcat","ĠĠ","er","on",")j"
    R"j(12","<0xC3>","<0xA9>","<0xE2>","<0x82>","<0xAC>"],"merges":[["Ġ","t"],["Ġt","h"],["Ġ)j"
    R"j(th","e"],["i","n"],["in","g"],["a","t"],["c","at"],["Ġ","c"],["Ġc","at"],["Ġ","Ġ"],[)j"
    R"j("e","r"],["a","t"],["c","at"],["o","n"],["1","2"]]}},"cases":[["the cat sat",[100,95)j"
    R"j(,104,95,83,103],[100,95,104,95,83,103,117]," the cat sat"],["The Cat  ",[95,52,72,69)j"
    R"j(,95,35,103,107],[95,52,72,69,95,35,103,107,117]," The Cat  "],["concatenate cat, cat)j"
    R"j(alog",[105,109,104,69,78,103,69,95,104,95,12,106,65,76,79,71],[105,109,104,69,78,103)j"
    R"j(,69,95,104,95,12,106,65,76,79,71,117]," concatenate cat , catalog"],["  Leading and )j"
    R"j(trailing  ",[95,95,44,69,65,68,102,95,65,78,68,98,82,65,73,76,102,107],[95,95,44,69,)j"
    R"j(65,68,102,95,65,78,68,98,82,65,73,76,102,107,117],"  Leading and trailing  "],["x [M)j"
    R"j(] y",[95,88,118,95,89],[95,88,118,95,89,117]," x[M] y"," x y"],["x   [M]y",[95,88,11)j"
    R"j(8,95,89],[95,88,118,95,89,117]," x[M] y"," x y"],["a [R]   b",[95,65,95,119,95,66],[)j"
    R"j(95,65,95,119,95,66,117]," a [R] b"],["[R]\t\nz",[119,95,90],[119,95,90,117],"[R] z"])j"
    R"j(,["Dog dog DOG hotDog",[120,95,68,79,71,95,36,47,39,95,72,79,84,120],[120,95,68,79,7)j"
    R"j(1,95,36,47,39,95,72,79,84,120,117],"Dog dog DOG hotDog"],["thing-thing_thing",[99,10)j"
    R"j(2,13,84,72,102,63,84,72,102],[99,102,13,84,72,102,63,84,72,102,117]," thing-thing_th)j"
    R"j(ing"],["12,345.67! ok? yes.",[95,110,12,19,20,21,14,22,23,1,95,79,75,31,95,89,69,83,)j"
    R"j(14],[95,110,12,19,20,21,14,22,23,1,95,79,75,31,95,89,69,83,14,117]," 12,345.67! ok? )j"
    R"j(yes."],["1234 x12y 9",[95,110,19,20,95,88,110,89,95,25],[95,110,19,20,95,88,110,89,9)j"
    R"j(5,25,117]," 1234 x12y 9"],["café naïve ﬁ",[105,65,70,0,0,95,78,65,0,0,86,69,95,0,0,0)j"
    R"j(],[105,65,70,0,0,95,78,65,0,0,86,69,95,0,0,0,117]," caf<unk><unk> na<unk><unk>ve <un)j"
    R"j(k><unk><unk>"],["Ⅻ ２３",[95,0,0,0,95,0,0,0,0,0,0],[95,0,0,0,95,0,0,0,0,0,0,117]," <un)j"
    R"j(k><unk><unk> <unk><unk><unk><unk><unk><unk>"],["é€",[95,0,0,0,0,0],[95,0,0,0,0,0,117)j"
    R"j(]," <unk><unk><unk><unk><unk>"],["",[],[117],""],[" ",[95],[95,117]," "],["<s>the</s)j"
    R"j(>",[116,100,117],[116,100,117,117],"<s> the</s>"," the"],["tab\tnew\nline",[98,65,66)j"
    R"j(,97,78,69,87,96,76,101,69],[98,65,66,97,78,69,87,96,76,101,69,117]," tab\tnew\nline")j"
    R"j(],["done!!! ...",[95,68,109,69,1,1,1,95,14,14,14],[95,68,109,69,1,1,1,95,14,14,14,11)j"
    R"j(7]," done!!! ..."],["İstanbul ΣΑΣ",[95,0,0,83,84,65,78,66,85,76,95,0,0,0,0,0,0],[95,)j"
    R"j(0,0,83,84,65,78,66,85,76,95,0,0,0,0,0,0,117]," <unk><unk>stanbul <unk><unk><unk><unk)j"
    R"j(><unk><unk>"]],"pair":[116,100,95,104,117,95,88,118,95,89,117]},)j"
    R"j("prefix_suffix_string_merges_strip_accents":{"recipe":{"prefix":"##","suffix":"</w>")j"
    R"j(},"doc":{"version":"1.0","truncation":null,"padding":null,"added_tokens":[{"id":389,)j"
    R"j("content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false)j"
    R"j(,"special":true},{"id":390,"content":"</s>","single_word":false,"lstrip":false,"rstr)j"
    R"j(ip":false,"normalized":false,"special":true},{"id":391,"content":"cat","single_word")j"
    R"j(:true,"lstrip":false,"rstrip":false,"normalized":false,"special":false},{"id":392,"c)j"
    R"j(ontent":"[M]","single_word":false,"lstrip":true,"rstrip":false,"normalized":false,"s)j"
    R"j(pecial":true},{"id":393,"content":"[R]","single_word":false,"lstrip":false,"rstrip":)j"
    R"j(true,"normalized":false,"special":false},{"id":394,"content":"Dog","single_word":fal)j"
    R"j(se,"lstrip":false,"rstrip":false,"normalized":true,"special":false}],"normalizer":{")j"
    R"j(type":"Sequence","normalizers":[{"type":"NFD"},{"type":"StripAccents"},{"type":"NFC")j"
    R"j(}]},"pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{")j"
    R"j(String":" "},"behavior":"Removed","invert":false},{"type":"Digits","individual_digit)j"
    R"j(s":true}]},"post_processor":null,"decoder":null,"model":{"type":"BPE","dropout":null)j"
    R"j(,"unk_token":"<unk>","continuing_subword_prefix":"##","end_of_word_suffix":"</w>","f)j"
    R"j(use_unk":false,"byte_fallback":false,"ignore_merges":false,"vocab":["th","the","in",)j"
    R"j("ing","##at","the</w>","##at</w>","<0xC3>","<0xA9>","<0xE2>","<0x82>","<0xAC>"],"mer)j"
    R"j(ges":["t ##h","th ##e","i ##n","in ##g","##a ##t","th ##e</w>","##a ##t</w>"]}},"cas)j"
    R"j(es":[["the cat sat",[382,391,83,383],[382,391,83,383],"the</w> cat s ##at</w>"],["Th)j"
    R"j(e Cat  ",[52,166,351,35,383],[52,166,351,35,383],"T ##h ##e</w> C ##at</w>"],["conca)j"
    R"j(tenate cat, catalog",[67,173,172,161,381,163,172,381,351,391,200,67,381,159,170,173,)j"
    R"j(353],[67,173,172,161,381,163,172,381,351,391,200,67,381,159,170,173,353],"c ##o ##n )j"
    R"j(##c ##at ##e ##n ##at ##e</w> cat ,</w> c ##at ##a ##l ##o ##g</w>"],["  Leading and)j"
    R"j( trailing  ",[44,163,159,162,167,172,353,65,172,350,84,176,159,167,170,167,172,353],)j"
    R"j([44,163,159,162,167,172,353,65,172,350,84,176,159,167,170,167,172,353],"L ##e ##a ##)j"
    R"j(d ##i ##n ##g</w> a ##n ##d</w> t ##r ##a ##i ##l ##i ##n ##g</w>"],["x [M] y",[276,)j"
    R"j(392,277],[276,392,277],"x</w> [M] y</w>","x</w> y</w>"],["x   [M]y",[276,392,277],[2)j"
    R"j(76,392,277],"x</w> [M] y</w>","x</w> y</w>"],["a [R]   b",[253,393,254],[253,393,254)j"
    R"j(],"a</w> [R] b</w>"],["[R]\t\nz",[393,278],[393,278],"[R] z</w>"],["Dog dog DOG hotD)j"
    R"j(og",[394,68,173,353,36,141,321,72,173,366,394],[394,68,173,353,36,141,321,72,173,366)j"
    R"j(,394],"Dog d ##o ##g</w> D ##O ##G</w> h ##o ##t</w> Dog"],["thing-thing_thing",[377)j"
    R"j(,167,172,165,107,178,166,167,172,165,157,178,166,167,172,353],[377,167,172,165,107,1)j"
    R"j(78,166,167,172,165,157,178,166,167,172,353],"th ##i ##n ##g ##- ##t ##h ##i ##n ##g )j"
    R"j(##_ ##t ##h ##i ##n ##g</w>"],["12,345.67! ok? yes.",[205,206,200,207,208,209,202,21)j"
    R"j(0,211,189,79,169,313,89,163,177,296],[205,206,200,207,208,209,202,210,211,189,79,169)j"
    R"j(,313,89,163,177,296],"1</w> 2</w> ,</w> 3</w> 4</w> 5</w> .</w> 6</w> 7</w> !</w> o )j"
    R"j(##k ##?</w> y ##e ##s ##.</w>"],["1234 x12y 9",[205,206,207,208,276,205,206,277,213])j"
    R"j(,[205,206,207,208,276,205,206,277,213],"1</w> 2</w> 3</w> 4</w> x</w> 1</w> 2</w> y<)j"
    R"j(/w> 9</w>"],["café naïve ﬁ",[67,159,164,351,78,159,167,180,351,0],[67,159,164,351,78)j"
    R"j(,159,167,180,351,0],"c ##a ##f ##e</w> n ##a ##i ##v ##e</w> <unk>"],["Ⅻ ２３",[0,0,0])j"
    R"j(,[0,0,0],"<unk> <unk> <unk>"],["é€",[69,0],[69,0],"e <unk>"],["",[],[],""],[" ",[],[)j"
    R"j(],""],["<s>the</s>",[389,382,390],[389,382,390],"<s> the</w> </s>","the</w>"],["tab\)j"
    R"j(tnew\nline",[84,159,160,0,172,163,181,0,170,167,172,351],[84,159,160,0,172,163,181,0)j"
    R"j(,170,167,172,351],"t ##a ##b <unk> ##n ##e ##w <unk> ##l ##i ##n ##e</w>"],["done!!!)j"
    R"j( ...",[68,173,172,163,95,95,283,14,108,296],[68,173,172,163,95,95,283,14,108,296],"d)j"
    R"j( ##o ##n ##e ##! ##! ##!</w> . ##. ##.</w>"],["İstanbul ΣΑΣ",[41,177,178,159,172,160)j"
    R"j(,179,358,0,0,0],[41,177,178,159,172,160,179,358,0,0,0],"I ##s ##t ##a ##n ##b ##u ##)j"
    R"j(l</w> <unk> <unk> <unk>"]],"pair":[382,391,276,392,277]},)j"
    R"j("ignore_merges_byte_fallback":{"recipe":{},"doc":{"version":"1.0","truncation":null,)j"
    R"j("padding":null,"added_tokens":[{"id":109,"content":"<s>","single_word":false,"lstrip)j"
    R"j(":false,"rstrip":false,"normalized":false,"special":true},{"id":110,"content":"</s>")j"
    R"j(,"single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true)j"
    R"j(},{"id":101,"content":"cat","single_word":true,"lstrip":false,"rstrip":false,"normal)j"
    R"j(ized":false,"special":false},{"id":111,"content":"[M]","single_word":false,"lstrip":)j"
    R"j(true,"rstrip":false,"normalized":false,"special":true},{"id":112,"content":"[R]","si)j"
    R"j(ngle_word":false,"lstrip":false,"rstrip":true,"normalized":false,"special":false},{")j"
    R"j(id":113,"content":"Dog","single_word":false,"lstrip":false,"rstrip":false,"normalize)j"
    R"j(d":true,"special":false}],"normalizer":{"type":"Prepend","prepend":"_"},"pre_tokeniz)j"
    R"j(er":{"type":"Split","pattern":{"Regex":"\\s+"},"behavior":"Isolated","invert":false})j"
    R"j(,"post_processor":null,"decoder":{"type":"Sequence","decoders":[{"type":"ByteFallbac)j"
    R"j(k"},{"type":"Fuse"}]},"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","cont)j"
    R"j(inuing_subword_prefix":null,"end_of_word_suffix":null,"fuse_unk":true,"byte_fallback)j"
    R"j(":true,"ignore_merges":true,"vocab":["th","the","in","ing","er","at","cat","on","12")j"
    R"j(,"<0xC3>","<0xA9>","<0xE2>","<0x82>","<0xAC>"],"merges":[["t","h"],["th","e"],["i",")j"
    R"j(n"],["in","g"],["e","r"],["a","t"],["c","at"],["o","n"],["1","2"]]}},"cases":[["the )j"
    R"j(cat sat",[63,96,0,101,63,0,83,100],[63,96,0,101,63,0,83,100],"_the<unk>cat_<unk>sat")j"
    R"j(],["The Cat  ",[63,52,72,69,0,35,100,0],[63,52,72,69,0,35,100,0],"_The<unk>Cat<unk>")j"
    R"j(],["concatenate cat, catalog",[63,67,102,101,69,78,100,69,0,101,63,12,0,101,65,76,79)j"
    R"j(,71],[63,67,102,101,69,78,100,69,0,101,63,12,0,101,65,76,79,71],"_concatenate<unk>ca)j"
    R"j(t_,<unk>catalog"],["  Leading and trailing  ",[63,0,44,69,65,68,98,0,65,78,68,0,84,8)j"
    R"j(2,65,73,76,98,0],[63,0,44,69,65,68,98,0,65,78,68,0,84,82,65,73,76,98,0],"_<unk>Leadi)j"
    R"j(ng<unk>and<unk>trailing<unk>"],["x [M] y",[63,88,111,63,0,89],[63,88,111,63,0,89],"_)j"
    R"j(x[M]_<unk>y","_x_<unk>y"],["x   [M]y",[63,88,111,63,89],[63,88,111,63,89],"_x[M]_y",)j"
    R"j("_x_y"],["a [R]   b",[63,65,0,112,63,66],[63,65,0,112,63,66],"_a<unk>[R]_b"],["[R]\t)j"
    R"j(\nz",[112,63,90],[112,63,90],"[R]_z"],["Dog dog DOG hotDog",[113,0,68,79,71,0,36,47,)j"
    R"j(39,0,72,79,84,36,79,71],[113,0,68,79,71,0,36,47,39,0,72,79,84,36,79,71],"_Dog<unk>do)j"
    R"j(g<unk>DOG<unk>hotDog"],["thing-thing_thing",[63,95,98,13,95,98,63,95,98],[63,95,98,1)j"
    R"j(3,95,98,63,95,98],"_thing-thing_thing"],["12,345.67! ok? yes.",[63,103,12,19,20,21,1)j"
    R"j(4,22,23,1,0,79,75,31,0,89,69,83,14],[63,103,12,19,20,21,14,22,23,1,0,79,75,31,0,89,6)j"
    R"j(9,83,14],"_12,345.67!<unk>ok?<unk>yes."],["1234 x12y 9",[63,103,19,20,0,88,103,89,0,)j"
    R"j(25],[63,103,19,20,0,88,103,89,0,25],"_1234<unk>x12y<unk>9"],["café naïve ﬁ",[63,67,6)j"
    R"j(5,70,104,105,0,78,65,0,86,69,0,0],[63,67,65,70,104,105,0,78,65,0,86,69,0,0],"_café<u)j"
    R"j(nk>na<unk>ve<unk><unk>"],["Ⅻ ２３",[63,0,0,0],[63,0,0,0],"_<unk><unk><unk>"],["é€",[63)j"
    R"j(,104,105,106,107,108],[63,104,105,106,107,108],"_é€"],["",[],[],""],[" ",[63,0],[63,)j"
    R"j(0],"_<unk>"],["<s>the</s>",[109,63,96,110],[109,63,96,110],"<s>_the</s>","_the"],["t)j"
    R"j(ab\tnew\nline",[63,84,65,66,0,78,69,87,0,76,97,69],[63,84,65,66,0,78,69,87,0,76,97,6)j"
    R"j(9],"_tab<unk>new<unk>line"],["done!!! ...",[63,68,102,69,1,1,1,0,14,14,14],[63,68,10)j"
    R"j(2,69,1,1,1,0,14,14,14],"_done!!!<unk>..."],["İstanbul ΣΑΣ",[63,0,83,84,65,78,66,85,7)j"
    R"j(6,0,0],[63,0,83,84,65,78,66,85,76,0,0],"_<unk>stanbul<unk><unk>"]],"pair":[63,96,0,1)j"
    R"j(01,63,88,111,63,0,89]})j"
    R"j(})j";

json synthetic_doc(const json& variant) {
    json doc = variant["doc"];
    const json& recipe = variant["recipe"];
    const std::string prefix = recipe.value("prefix", "");
    const std::string suffix = recipe.value("suffix", "");
    std::vector<std::string> chars;
    for (char c = 0x21; c < 0x7f; ++c) chars.emplace_back(1, c);
    std::vector<std::string> tokens{"<unk>"};
    tokens.insert(tokens.end(), chars.begin(), chars.end());
    if (recipe.value("byte_level", false)) {
        for (const char* t : {"\u0120", "\u010a", "\u0109"}) tokens.emplace_back(t);
    }
    if (!prefix.empty()) {
        for (const auto& c : chars) tokens.push_back(prefix + c);
    }
    if (!suffix.empty()) {
        for (const auto& c : chars) tokens.push_back(c + suffix);
        if (!prefix.empty()) {
            for (const auto& c : chars) tokens.push_back(prefix + c + suffix);
        }
    }
    for (const auto& t : doc["model"]["vocab"]) tokens.push_back(t.get<std::string>());
    json vocab = json::object();
    for (size_t idx = 0; idx < tokens.size(); ++idx) vocab[tokens[idx]] = idx;
    doc["model"]["vocab"] = vocab;
    return doc;
}

TEST(tokenizer_synthetic, components_match_hf) {
    const json variants = json::parse(kSyntheticCases);
    ASSERT_EQ(variants.size(), 6u);
    for (const auto& [name, variant] : variants.items()) {
        SCOPED_TRACE(name);
        const tokenizer tok = tokenizer::from_json(synthetic_doc(variant).dump(), name + ".json");
        for (const auto& c : variant["cases"]) {
            const std::string text = c[0].get<std::string>();
            const auto ids = to_ids(c[1]);
            EXPECT_EQ(tok.encode(text, false), ids) << json(text).dump();
            EXPECT_EQ(tok.encode(text, true), to_ids(c[2])) << json(text).dump();
            EXPECT_EQ(tok.decode(ids, false), c[3].get<std::string>()) << json(text).dump();
            const std::string skip =
                c.size() > 4 ? c[4].get<std::string>() : c[3].get<std::string>();
            EXPECT_EQ(tok.decode(ids, true), skip) << json(text).dump();
            check_stream(tok, ids, false, "stream " + json(text).dump());
        }
        EXPECT_EQ(tok.encode_pair("the cat", "x [M] y", true), to_ids(variant["pair"]));
    }
}

// -- vocabulary and special ids -------------------------------------------------------------

tokenizer gpt2() { return tokenizer::load(source_path("model/tokenizers/gpt2/tokenizer.json")); }

TEST(tokenizer_vocab, lookups_and_specials) {
    const tokenizer tok = gpt2();
    EXPECT_EQ(tok.vocab_size(), 1000);
    EXPECT_EQ(tok.token_to_id("<longcat_s>"), 1);
    EXPECT_EQ(tok.token_to_id("LongCat"), 999);
    EXPECT_EQ(tok.token_to_id("no such token"), std::nullopt);
    EXPECT_EQ(tok.id_to_token(2), "</longcat_s>");
    EXPECT_EQ(tok.id_to_token(-1), std::nullopt);
    EXPECT_EQ(tok.id_to_token(100000), std::nullopt);
    EXPECT_TRUE(tok.is_special(1));
    EXPECT_TRUE(tok.is_special(998));
    EXPECT_FALSE(tok.is_special(999));
    EXPECT_FALSE(tok.is_special(500));
    // No tokenizer_config.json: the LongCat family tokens.
    EXPECT_EQ(tok.bos_id(), 1);
    EXPECT_EQ(tok.eos_id(), 2);
    EXPECT_EQ(tok.pad_id(), 3);
    EXPECT_FALSE(tok.has_chat_template());
    EXPECT_EQ(tok.added_tokens().size(), 8u);
    // Unknown ids decode to nothing, as in HF.
    EXPECT_EQ(tok.decode(std::vector<int32_t>{-5, 123456}), "");
}

TEST(tokenizer_encode, rejects_invalid_utf8) {
    const tokenizer tok = gpt2();
    try {
        tok.encode("ok \xC3(", false);
        FAIL() << "expected model_error";
    } catch (const model_error& e) {
        EXPECT_NE(std::string(e.what()).find("not valid UTF-8"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("tokenizer.json"), std::string::npos) << e.what();
    }
}

TEST(tokenizer_encode, concurrent_encodes_agree) {
    const tokenizer tok = tokenizer::load(source_path("model/tokenizers/llama3/tokenizer.json"));
    const json doc = read_json(source_path("tests/golden/data/tokenizers/llama3.json"));
    std::vector<std::thread> threads;
    std::vector<int> num_mismatches(4, 0);
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            for (const auto& c : doc["cases"]) {
                if (tok.encode(c["text"].get<std::string>(), false) != to_ids(c["ids"])) {
                    ++num_mismatches[t];
                }
            }
        });
    }
    for (auto& th : threads) th.join();
    for (int t = 0; t < 4; ++t) EXPECT_EQ(num_mismatches[t], 0) << "thread " << t;
}

TEST(tokenizer_encode, hundred_kilobytes_is_fast) {
    std::string text;
    const std::string para =
        "This License applies to any program or other work which contains a notice placed by "
        "the copyright holder. \xE4\xB8\xAD\xE6\x96\x87\xE6\xAE\xB5\xE8\x90\xBD\xE3\x80\x82 "
        "def g(n):\n    return [k for k in range(n)]  # 12345\n\n";
    while (text.size() < 100 * 1024) text += para;
    for (const char* name : {"gpt2", "llama3"}) {
        const tokenizer tok = tokenizer::load(
            source_path(std::string("model/tokenizers/") + name + "/tokenizer.json"));
        const auto start = std::chrono::steady_clock::now();
        const auto ids = tok.encode(text, false);
        const double seconds =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        EXPECT_EQ(tok.decode(ids), text);
        // Well under a second in a release build; the bound leaves room for sanitizers.
        EXPECT_LT(seconds, 2.0) << name;
        std::printf("encode 100 KB with %s: %zu ids in %.1f ms\n", name, ids.size(), seconds * 1e3);
    }
    // No pre-tokenizer: the whole text is one BPE word (the heap keeps it n log n).
    const tokenizer tok =
        tokenizer::load(source_path("tests/golden/data/tokenizers/bytefallback/tokenizer.json"));
    const auto start = std::chrono::steady_clock::now();
    const auto ids = tok.encode(text, false);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_EQ(tok.decode(ids), text);
    EXPECT_LT(seconds, 2.0);
    std::printf("encode 100 KB with bytefallback: %zu ids in %.1f ms\n", ids.size(), seconds * 1e3);
}

// -- streaming ------------------------------------------------------------------------------

TEST(stream_decoder, random_ids_add_up_to_decode) {
    std::mt19937 rng(20251129);
    for (const char* rel :
         {"model/tokenizers/gpt2/tokenizer.json", "model/tokenizers/llama3/tokenizer.json",
          "tests/golden/data/tokenizers/bytefallback/tokenizer.json"}) {
        const tokenizer tok = tokenizer::load(source_path(rel));
        std::vector<int32_t> byte_ids;
        for (int b = 0; b < 256; ++b) {
            char name[8];
            std::snprintf(name, sizeof(name), "<0x%02X>", b);
            if (const auto id = tok.token_to_id(name)) byte_ids.push_back(*id);
        }
        std::uniform_int_distribution<int32_t> any_id(0,
                                                      static_cast<int32_t>(tok.vocab_size()) - 1);
        for (int trial = 0; trial < 200; ++trial) {
            std::vector<int32_t> ids;
            const int num_ids = 1 + trial % 40;
            for (int k = 0; k < num_ids; ++k) {
                const bool pick_byte = !byte_ids.empty() && rng() % 2 == 0;
                ids.push_back(pick_byte ? byte_ids[rng() % byte_ids.size()] : any_id(rng));
            }
            check_stream(tok, ids, trial % 2 == 0,
                         std::string(rel) + " trial " + std::to_string(trial));
        }
    }
}

TEST(stream_decoder, holds_back_incomplete_characters) {
    const tokenizer tok =
        tokenizer::load(source_path("tests/golden/data/tokenizers/bytefallback/tokenizer.json"));
    const auto byte = [&](int b) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", b);
        return *tok.token_to_id(name);
    };
    // "€" is E2 82 AC: nothing is final until the byte run ends (a following invalid byte would
    // turn the whole run into U+FFFDs).
    stream_decoder stream(tok);
    EXPECT_EQ(stream.push(byte(0xE2)), "");
    EXPECT_EQ(stream.push(byte(0x82)), "");
    EXPECT_EQ(stream.push(byte(0xAC)), "");
    const int32_t a = *tok.token_to_id("a");
    EXPECT_EQ(stream.push(a),
              "\u20AC"
              "a");
    EXPECT_EQ(stream.flush(), "");
    const std::vector<int32_t> bad{byte(0xE2), byte(0x82), byte(0xAC), byte(0xFF), a};
    check_stream(tok, bad, false, "invalid byte run");

    // Byte-level: the 3 bytes of "中" spread over tokens never surface half-done.
    const tokenizer bl = gpt2();
    const auto ids = bl.encode("\xE4\xB8\xAD\xE6\x96\x87", false);
    stream_decoder s2(bl);
    std::string joined;
    for (const int32_t id : ids) {
        const std::string piece = s2.push(id);
        EXPECT_TRUE(valid_utf8(piece));
        EXPECT_EQ(piece.find("\xEF\xBF\xBD"), std::string::npos);
        joined += piece;
    }
    joined += s2.flush();
    EXPECT_EQ(joined, "\xE4\xB8\xAD\xE6\x96\x87");
}

TEST(stream_decoder, emits_ascii_token_by_token) {
    const tokenizer tok = gpt2();
    const auto ids = tok.encode("Hello world, this is a test.", false);
    stream_decoder stream(tok);
    for (const int32_t id : ids) {
        EXPECT_EQ(stream.push(id), tok.decode(std::vector<int32_t>{id}));
    }
    EXPECT_EQ(stream.flush(), "");
}

// -- tokenizer_config.json ------------------------------------------------------------------

std::filesystem::path scratch_dir(const std::string& name) {
    const auto dir = std::filesystem::path(::testing::TempDir()) / ("longcat_tokenizer_" + name);
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
    return dir;
}

void write_file(const std::filesystem::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::binary);
    out << text;
}

TEST(tokenizer_config, special_tokens_and_chat_template) {
    const auto dir = scratch_dir("config");
    std::filesystem::copy_file(source_path("model/tokenizers/gpt2/tokenizer.json"),
                               dir / "tokenizer.json");
    write_file(dir / "tokenizer_config.json", R"({
        "bos_token": {"__type": "AddedToken", "content": "<longcat_s>", "special": true},
        "eos_token": "</longcat_s>",
        "pad_token": "<longcat_pad>",
        "unk_token": null,
        "add_bos_token": false,
        "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"
    })");
    const tokenizer tok = tokenizer::load_dir(dir);
    EXPECT_EQ(tok.bos_id(), 1);
    EXPECT_EQ(tok.eos_id(), 2);
    EXPECT_EQ(tok.pad_id(), 3);
    EXPECT_EQ(tok.config().bos_token, "<longcat_s>");
    EXPECT_EQ(tok.config().add_bos_token, false);
    EXPECT_EQ(tok.config().add_eos_token, std::nullopt);
    EXPECT_TRUE(tok.has_chat_template());
    EXPECT_NE(tok.config().chat_template.find("messages"), std::string::npos);
    // The tokenizer.json post_processor stays authoritative: BOS is still prepended.
    EXPECT_EQ(tok.encode("Hi", true).front(), 1);
}

TEST(tokenizer_config, add_bos_and_eos_without_post_processor) {
    json doc = read_json(source_path("model/tokenizers/gpt2/tokenizer.json"));
    doc["post_processor"] = nullptr;
    const tokenizer tok = tokenizer::from_json(
        doc.dump(), "tokenizer.json",
        R"({"bos_token": "<longcat_s>", "eos_token": "</longcat_s>", "add_bos_token": true,
            "add_eos_token": true})",
        "tokenizer_config.json");
    const auto plain = tok.encode("Hello", false);
    auto expected = plain;
    expected.insert(expected.begin(), 1);
    expected.push_back(2);
    EXPECT_EQ(tok.encode("Hello", true), expected);
    const tokenizer no_config = tokenizer::from_json(doc.dump(), "tokenizer.json");
    EXPECT_EQ(no_config.encode("Hello", true), plain);
}

// -- bad input: each error names the file and the JSON path --------------------------------

json minimal_doc() {
    return json::parse(R"({
        "version": "1.0", "added_tokens": [], "normalizer": null, "pre_tokenizer": null,
        "post_processor": null, "decoder": null,
        "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}
    })");
}

// Writes `text` as <scratch>/tokenizer.json, loads it and returns the model_error message.
std::string load_error(const std::string& test_name, const std::string& text) {
    const auto path = scratch_dir(test_name) / "tokenizer.json";
    write_file(path, text);
    try {
        tokenizer::load(path);
    } catch (const model_error& e) {
        const std::string message = e.what();
        EXPECT_NE(message.find("tokenizer.json"), std::string::npos) << message;
        return message;
    }
    ADD_FAILURE() << "no model_error for " << test_name;
    return {};
}

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

TEST(tokenizer_errors, minimal_doc_loads) {
    const tokenizer tok = tokenizer::from_json(minimal_doc().dump(), "tokenizer.json");
    EXPECT_EQ(tok.encode("abba", false), (std::vector<int32_t>{2, 1, 0}));
}

TEST(tokenizer_errors, malformed_json) {
    const std::string message = load_error("malformed", R"({"version": "1.0", "model": )");
    EXPECT_TRUE(contains(message, "malformed JSON")) << message;
}

TEST(tokenizer_errors, unknown_normalizer) {
    json doc = minimal_doc();
    doc["normalizer"] = {{"type", "Sequence"},
                         {"normalizers", {{{"type", "NFC"}}, {{"type", "Precompiled"}}}}};
    const std::string message = load_error("normalizer", doc.dump());
    EXPECT_TRUE(contains(message,
                         "/normalizer/normalizers/1/type: unsupported normalizer "
                         "\"Precompiled\""))
        << message;
}

TEST(tokenizer_errors, unknown_pre_tokenizer) {
    json doc = minimal_doc();
    doc["pre_tokenizer"] = json::parse(R"({"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": true},
        {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
        {"type": "Metaspace", "replacement": "_"}]})");
    const std::string message = load_error("pre_tokenizer", doc.dump());
    EXPECT_TRUE(contains(message,
                         "tokenizer.json: /pre_tokenizer/pretokenizers/2/type: "
                         "unsupported pre-tokenizer \"Metaspace\""))
        << message;
}

TEST(tokenizer_errors, unknown_decoder) {
    json doc = minimal_doc();
    doc["decoder"] = json::parse(R"({"type": "Sequence", "decoders": [{"type": "WordPiece"}]})");
    const std::string message = load_error("decoder", doc.dump());
    EXPECT_TRUE(contains(message, "/decoder/decoders/0/type: unsupported decoder \"WordPiece\""))
        << message;
}

TEST(tokenizer_errors, unknown_model_type) {
    json doc = minimal_doc();
    doc["model"]["type"] = "Unigram";
    const std::string message = load_error("model_type", doc.dump());
    EXPECT_TRUE(contains(message, "/model/type: unsupported model \"Unigram\"")) << message;
}

TEST(tokenizer_errors, unknown_post_processor) {
    json doc = minimal_doc();
    doc["post_processor"] = {{"type", "RobertaProcessing"}};
    const std::string message = load_error("post_processor", doc.dump());
    EXPECT_TRUE(contains(message, "/post_processor/type: unsupported post-processor")) << message;
}

TEST(tokenizer_errors, bad_merges_entry) {
    json doc = minimal_doc();
    doc["model"]["merges"] = json::array({"a b", "a b c"});
    const std::string message = load_error("merges", doc.dump());
    EXPECT_TRUE(contains(message, "/model/merges/1: bad merge")) << message;
}

TEST(tokenizer_errors, merge_token_not_in_vocab) {
    json doc = minimal_doc();
    doc["model"]["merges"] = json::array({json::array({"a", "b"}), json::array({"b", "z"})});
    const std::string message = load_error("merge_oov", doc.dump());
    EXPECT_TRUE(contains(message, "/model/merges/1: bad merge: token \"z\"")) << message;
}

TEST(tokenizer_errors, missing_vocab) {
    json doc = minimal_doc();
    doc["model"].erase("vocab");
    const std::string message = load_error("vocab", doc.dump());
    EXPECT_TRUE(contains(message, "/model/vocab: missing")) << message;
}

TEST(tokenizer_errors, bad_vocab_id) {
    json doc = minimal_doc();
    doc["model"]["vocab"]["b"] = "one";
    const std::string message = load_error("vocab_id", doc.dump());
    EXPECT_TRUE(contains(message, "/model/vocab/b: expected an integer")) << message;
}

// Sequences nested past 16 levels are refused at the level that goes too deep (each level
// recursed and copied its path: a megabyte of nesting overflowed the stack). 16 still load.
TEST(tokenizer_errors, sequence_nested_too_deep) {
    const auto nested = [](int levels) {
        json node = {{"type", "ByteLevel"}};
        for (int i = 0; i < levels; ++i)
            node = {{"type", "Sequence"}, {"decoders", json::array({node})}};
        return node;
    };
    json doc = minimal_doc();
    doc["decoder"] = nested(16);
    EXPECT_NO_THROW(tokenizer::from_json(doc.dump(), "tokenizer.json"));
    doc["decoder"] = nested(17);
    std::string message = load_error("nested_decoder", doc.dump());
    EXPECT_TRUE(contains(message, "/type: Sequence nested deeper than 16 levels")) << message;
    // 20000 levels as text (a json value that deep cannot even be copied or dumped: nlohmann's
    // copy and dump recurse); the loader refuses it at level 17 without copying it.
    std::string deep;
    for (int i = 0; i < 20000; ++i) deep += R"({"type": "Sequence", "decoders": [)";
    deep += R"({"type": "ByteLevel"})";
    for (int i = 0; i < 20000; ++i) deep += "]}";
    doc["decoder"] = nullptr;
    std::string text = doc.dump();
    const std::string slot = R"("decoder":null)";
    ASSERT_NE(text.find(slot), std::string::npos) << text;
    text.replace(text.find(slot), slot.size(), "\"decoder\":" + deep);
    message = load_error("nested_decoder_deep", text);
    EXPECT_TRUE(contains(message, "Sequence nested deeper than 16 levels")) << message;
    doc = minimal_doc();
    json norm = {{"type", "NFC"}};
    for (int i = 0; i < 17; ++i)
        norm = {{"type", "Sequence"}, {"normalizers", json::array({norm})}};
    doc["normalizer"] = norm;
    message = load_error("nested_normalizer", doc.dump());
    EXPECT_TRUE(contains(message, "Sequence nested deeper than 16 levels")) << message;
}

// Ids far sparser than any vocabulary are refused before the id-indexed tables are sized (a
// 30-byte vocabulary with id 16777215 allocated 16M strings).
TEST(tokenizer_errors, sparse_vocab_ids) {
    json doc = minimal_doc();
    doc["model"]["merges"] = json::array();
    doc["model"]["vocab"] = {{"a", 0}, {"b", 16777215}};
    const std::string message = load_error("sparse_ids", doc.dump());
    EXPECT_TRUE(contains(message, "token id 16777215 for 2 entries")) << message;
    doc["model"]["vocab"] = {{"a", 0}, {"b", 60000}};  // a gap, but not an absurd one
    EXPECT_NO_THROW(tokenizer::from_json(doc.dump(), "tokenizer.json"));
}

TEST(tokenizer_errors, number_overflowing_a_double) {
    json doc = minimal_doc();
    std::string text = doc.dump();
    text.insert(1, R"("extra": 1e400, )");
    const std::string message = load_error("huge_number", text);
    EXPECT_TRUE(contains(message, "malformed JSON")) << message;
}

TEST(tokenizer_errors, invalid_regex) {
    json doc = minimal_doc();
    doc["pre_tokenizer"] = json::parse(
        R"({"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated",
            "invert": false})");
    const std::string message = load_error("regex", doc.dump());
    EXPECT_TRUE(contains(message, "/pre_tokenizer/pattern/Regex: invalid regex")) << message;
}

TEST(tokenizer_errors, bad_split_behavior) {
    json doc = minimal_doc();
    doc["pre_tokenizer"] = json::parse(
        R"({"type": "Split", "pattern": {"String": " "}, "behavior": "Sideways",
            "invert": false})");
    const std::string message = load_error("behavior", doc.dump());
    EXPECT_TRUE(contains(message, "/pre_tokenizer/behavior: unknown split behavior")) << message;
}

TEST(tokenizer_errors, template_names_unknown_special_token) {
    json doc = minimal_doc();
    doc["post_processor"] = json::parse(R"({"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {}})");
    const std::string message = load_error("template", doc.dump());
    EXPECT_TRUE(contains(message, "/post_processor/single/0/SpecialToken/id")) << message;
}

TEST(tokenizer_errors, bad_tokenizer_config) {
    const auto dir = scratch_dir("bad_config");
    write_file(dir / "tokenizer.json", minimal_doc().dump());
    write_file(dir / "tokenizer_config.json", R"({"bos_token": 5})");
    try {
        tokenizer::load_dir(dir);
        FAIL() << "expected model_error";
    } catch (const model_error& e) {
        EXPECT_TRUE(contains(e.what(), "tokenizer_config.json: /bos_token:")) << e.what();
    }
    write_file(dir / "tokenizer_config.json", R"({"eos_token": "</nope>"})");
    try {
        tokenizer::load_dir(dir);
        FAIL() << "expected model_error";
    } catch (const model_error& e) {
        EXPECT_TRUE(contains(e.what(), "tokenizer_config.json: /eos_token: token \"</nope>\""))
            << e.what();
    }
}

TEST(tokenizer_errors, missing_file) {
    try {
        tokenizer::load("/nonexistent/dir/tokenizer.json");
        FAIL() << "expected model_error";
    } catch (const model_error& e) {
        EXPECT_TRUE(contains(e.what(), "/nonexistent/dir/tokenizer.json")) << e.what();
    }
}

}  // namespace
}  // namespace longcat::model
