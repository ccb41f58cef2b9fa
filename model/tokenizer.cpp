#include "model/tokenizer.hpp"

#include <oniguruma.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "model/error.hpp"

namespace longcat::model {
namespace {

using json = nlohmann::json;

// -- UTF-8 ---------------------------------------------------------------------------------

// Length of the sequence a lead byte announces (1 for stray bytes, so scans always advance).
inline size_t utf8_seq_len(unsigned char lead) {
    if (lead < 0xC0) return 1;
    if (lead < 0xE0) return 2;
    if (lead < 0xF0) return 3;
    return lead < 0xF8 ? 4 : 1;
}

// Decodes the code point at `pos` of valid UTF-8.
inline uint32_t decode_cp(std::string_view s, size_t pos, size_t* len) {
    const auto b0 = static_cast<unsigned char>(s[pos]);
    const size_t n = utf8_seq_len(b0);
    *len = n;
    if (n == 1) return b0;
    uint32_t cp = b0 & (0x7F >> n);
    for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[pos + k]) & 0x3F);
    return cp;
}

// The code point that ends just before `end` (valid UTF-8, end > 0).
inline uint32_t decode_cp_before(std::string_view s, size_t end, size_t* start) {
    size_t pos = end - 1;
    while (pos > 0 && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) --pos;
    *start = pos;
    size_t len = 0;
    return decode_cp(s, pos, &len);
}

inline void append_cp(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// At `pos`: the length of a valid UTF-8 sequence (> 0), or minus the length of the maximal
// ill-formed subpart (Unicode "substitution of maximal subparts", what Rust's lossy decoding
// replaces by one U+FFFD).
inline int utf8_step(std::string_view s, size_t pos) {
    const auto b0 = static_cast<unsigned char>(s[pos]);
    if (b0 < 0x80) return 1;
    int need = 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 1;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        need = 2;
        if (b0 == 0xE0) lo = 0xA0;
        if (b0 == 0xED) hi = 0x9F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        need = 3;
        if (b0 == 0xF0) lo = 0x90;
        if (b0 == 0xF4) hi = 0x8F;
    } else {
        return -1;
    }
    int taken = 1;
    for (int k = 0; k < need; ++k) {
        if (pos + taken >= s.size()) return -taken;
        const auto b = static_cast<unsigned char>(s[pos + taken]);
        const unsigned char l = k == 0 ? lo : 0x80;
        const unsigned char h = k == 0 ? hi : 0xBF;
        if (b < l || b > h) return -taken;
        ++taken;
    }
    return taken;
}

// Offset of the first invalid byte, or npos when `s` is valid UTF-8.
size_t find_invalid_utf8(std::string_view s) {
    size_t pos = 0;
    while (pos < s.size()) {
        if (static_cast<unsigned char>(s[pos]) < 0x80) {
            ++pos;
            continue;
        }
        const int step = utf8_step(s, pos);
        if (step < 0) return pos;
        pos += static_cast<size_t>(step);
    }
    return std::string_view::npos;
}

void append_lossy_utf8(std::string& out, std::string_view bytes) {
    size_t pos = 0;
    while (pos < bytes.size()) {
        const int step = utf8_step(bytes, pos);
        if (step > 0) {
            out.append(bytes.substr(pos, static_cast<size_t>(step)));
            pos += static_cast<size_t>(step);
        } else {
            out.append(kReplacementChar);
            pos += static_cast<size_t>(-step);
        }
    }
}

bool ends_with(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// -- Unicode properties ------------------------------------------------------------------

// The White_Space property (Rust's char::is_whitespace and regex \s).
bool is_white_space(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

// Rust's char::is_numeric: general categories Nd, Nl, No.
bool is_numeric(uint32_t cp) {
    if (cp < 0x80) return cp >= '0' && cp <= '9';
    const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
    return cat == UTF8PROC_CATEGORY_ND || cat == UTF8PROC_CATEGORY_NL ||
           cat == UTF8PROC_CATEGORY_NO;
}

// Rust regex \w: Alphabetic, marks, Nd, Pc, Join_Control. Alphabetic is approximated by the
// letter categories, Nl and the circled letters (the Other_Alphabetic symbols).
bool is_word_char(uint32_t cp) {
    if (cp < 0x80) {
        return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9') ||
               cp == '_';
    }
    if (cp == 0x200C || cp == 0x200D) return true;
    if ((cp >= 0x24B6 && cp <= 0x24E9) || (cp >= 0x1F130 && cp <= 0x1F149) ||
        (cp >= 0x1F150 && cp <= 0x1F169) || (cp >= 0x1F170 && cp <= 0x1F189)) {
        return true;
    }
    switch (utf8proc_category(static_cast<utf8proc_int32_t>(cp))) {
        case UTF8PROC_CATEGORY_LU:
        case UTF8PROC_CATEGORY_LL:
        case UTF8PROC_CATEGORY_LT:
        case UTF8PROC_CATEGORY_LM:
        case UTF8PROC_CATEGORY_LO:
        case UTF8PROC_CATEGORY_NL:
        case UTF8PROC_CATEGORY_MN:
        case UTF8PROC_CATEGORY_MC:
        case UTF8PROC_CATEGORY_ME:
        case UTF8PROC_CATEGORY_ND:
        case UTF8PROC_CATEGORY_PC:
            return true;
        default:
            return false;
    }
}

bool is_combining_mark(uint32_t cp) {
    if (cp < 0x300) return false;
    const auto cat = utf8proc_category(static_cast<utf8proc_int32_t>(cp));
    return cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_MC ||
           cat == UTF8PROC_CATEGORY_ME;
}

bool is_ascii(std::string_view s) {
    for (const char c : s) {
        if (static_cast<unsigned char>(c) >= 0x80) return false;
    }
    return true;
}

// -- the GPT-2 byte <-> char map -----------------------------------------------------------

struct byte_level_map {
    std::array<std::array<char, 2>, 256> utf8{};  // each byte's char, UTF-8 (1 or 2 bytes)
    std::array<uint8_t, 256> utf8_len{};
    std::array<int16_t, 324> byte_of_cp{};  // code point -> byte, -1 when none

    byte_level_map() {
        byte_of_cp.fill(-1);
        uint32_t next_extra = 0;
        for (uint32_t b = 0; b < 256; ++b) {
            const bool printable =
                (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            const uint32_t cp = printable ? b : 256 + next_extra++;
            std::string enc;
            append_cp(enc, cp);
            utf8_len[b] = static_cast<uint8_t>(enc.size());
            for (size_t k = 0; k < enc.size(); ++k) utf8[b][k] = enc[k];
            byte_of_cp[cp] = static_cast<int16_t>(b);
        }
    }
};

const byte_level_map& byte_map() {
    static const byte_level_map map;
    return map;
}

void append_byte_level(std::string& out, std::string_view bytes) {
    const auto& map = byte_map();
    for (const char c : bytes) {
        const auto b = static_cast<unsigned char>(c);
        out.append(map.utf8[b].data(), map.utf8_len[b]);
    }
}

// -- JSON navigation with paths for error messages -----------------------------------------

std::string pointer_token(std::string_view key) {
    std::string out;
    for (const char c : key) {
        if (c == '~') {
            out += "~0";
        } else if (c == '/') {
            out += "~1";
        } else {
            out.push_back(c);
        }
    }
    return out;
}

const char* json_type_name(const json& j) { return j.type_name(); }

struct json_node {
    const json& value;
    std::string path;  // JSON pointer
    const std::string& origin;

    [[noreturn]] void fail(const std::string& message) const {
        throw model_error(origin + ": " + (path.empty() ? std::string("/") : path) + ": " +
                          message);
    }
    bool is_null() const { return value.is_null(); }
    // A required member.
    json_node operator[](std::string_view key) const {
        if (!value.is_object())
            fail(std::string("expected an object, got ") + json_type_name(value));
        const auto it = value.find(key);
        const std::string child_path = path + "/" + pointer_token(key);
        if (it == value.end()) {
            throw model_error(origin + ": " + child_path + ": missing");
        }
        return {*it, child_path, origin};
    }
    // An optional member: absent and null both give nullopt.
    std::optional<json_node> get(std::string_view key) const {
        if (!value.is_object())
            fail(std::string("expected an object, got ") + json_type_name(value));
        const auto it = value.find(key);
        if (it == value.end() || it->is_null()) return std::nullopt;
        return json_node{*it, path + "/" + pointer_token(key), origin};
    }
    json_node at(size_t idx) const {
        return {value[idx], path + "/" + std::to_string(idx), origin};
    }
    size_t array_size() const {
        if (!value.is_array()) fail(std::string("expected an array, got ") + json_type_name(value));
        return value.size();
    }
    const std::string& str() const {
        if (!value.is_string())
            fail(std::string("expected a string, got ") + json_type_name(value));
        return value.get_ref<const std::string&>();
    }
    bool boolean() const {
        if (!value.is_boolean())
            fail(std::string("expected a boolean, got ") + json_type_name(value));
        return value.get<bool>();
    }
    int64_t integer() const {
        if (!value.is_number_integer()) {
            fail(std::string("expected an integer, got ") + json_type_name(value));
        }
        return value.get<int64_t>();
    }
    double number() const {
        if (!value.is_number())
            fail(std::string("expected a number, got ") + json_type_name(value));
        return value.get<double>();
    }
    bool bool_or(std::string_view key, bool fallback) const {
        const auto child = get(key);
        return child ? child->boolean() : fallback;
    }
};

json parse_json_text(std::string_view text, const std::string& origin) {
    try {
        return json::parse(text.begin(), text.end());
    } catch (const json::exception& e) {  // parse_error, out_of_range (a number past a double's)
        throw model_error(origin + ": malformed JSON: " + e.what());
    }
}

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw model_error(path.string() + ": cannot open file");
    std::ostringstream buf;
    buf << in.rdbuf();
    if (in.bad()) throw model_error(path.string() + ": read error");
    return buf.str();
}

// -- Oniguruma -----------------------------------------------------------------------------

void ensure_onig_initialized() {
    static std::once_flag once;
    std::call_once(once, [] {
        OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
        onig_initialize(encodings, 1);
    });
}

std::mutex& onig_new_mutex() {
    static std::mutex mu;
    return mu;
}

// Escapes a literal for Oniguruma: every ASCII punctuation or control byte as \xHH.
std::string escape_literal(std::string_view literal) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (const char c : literal) {
        const auto b = static_cast<unsigned char>(c);
        const bool plain =
            b >= 0x80 || (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z');
        if (plain) {
            out.push_back(c);
        } else {
            out += "\\x";
            out.push_back(kHex[b >> 4]);
            out.push_back(kHex[b & 0xF]);
        }
    }
    return out;
}

struct region_holder {
    OnigRegion* region = onig_region_new();
    ~region_holder() { onig_region_free(region, 1); }
};

// A compiled Oniguruma regex (UTF-8, the default syntax, as HF's onig crate uses). Searches
// are thread-safe: each thread has its own match region.
class regex {
  public:
    regex(const std::string& pattern, const json_node& where)
        : origin_(where.origin), path_(where.path) {
        ensure_onig_initialized();
        OnigErrorInfo info{};
        int rc = 0;
        {
            std::lock_guard<std::mutex> lock(onig_new_mutex());
            const auto* begin = reinterpret_cast<const OnigUChar*>(pattern.data());
            rc = onig_new(&re_, begin, begin + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                          ONIG_SYNTAX_DEFAULT, &info);
        }
        if (rc != ONIG_NORMAL) {
            OnigUChar message[ONIG_MAX_ERROR_MESSAGE_LEN];
            onig_error_code_to_str(message, rc, &info);
            re_ = nullptr;
            where.fail("invalid regex \"" + pattern +
                       "\": " + reinterpret_cast<const char*>(message));
        }
    }
    ~regex() {
        if (re_ != nullptr) onig_free(re_);
    }
    regex(const regex&) = delete;
    regex& operator=(const regex&) = delete;

    // Calls fn(begin, end) for each successive match in `subject`, with the onig crate's
    // find_iter rules: after an empty match the search moves on one character, and an empty
    // match right after a non-empty one is skipped.
    template <class Fn>
    void for_each_match(std::string_view subject, Fn&& fn) const {
        thread_local region_holder holder;
        OnigRegion* region = holder.region;
        const auto* str = reinterpret_cast<const OnigUChar*>(subject.data());
        const auto* end = str + subject.size();
        size_t last_end = 0;
        bool skip_next_empty = false;
        while (last_end <= subject.size()) {
            onig_region_clear(region);
            const int rc =
                onig_search(re_, str, end, str + last_end, end, region, ONIG_OPTION_NONE);
            if (rc == ONIG_MISMATCH) break;
            if (rc < 0) {
                OnigUChar message[ONIG_MAX_ERROR_MESSAGE_LEN];
                onig_error_code_to_str(message, rc);
                throw model_error(origin_ + ": " + path_ + ": regex search failed: " +
                                  reinterpret_cast<const char*>(message));
            }
            const auto begin = static_cast<size_t>(region->beg[0]);
            const auto stop = static_cast<size_t>(region->end[0]);
            last_end = stop;
            if (begin == stop) {
                last_end += stop < subject.size()
                                ? utf8_seq_len(static_cast<unsigned char>(subject[stop]))
                                : 1;
                if (skip_next_empty) {
                    skip_next_empty = false;
                    continue;
                }
            } else {
                skip_next_empty = true;
            }
            fn(begin, stop);
        }
    }

  private:
    OnigRegex re_ = nullptr;
    std::string origin_;
    std::string path_;
};

// {"String": s} (a literal) or {"Regex": r}, as in Split, Replace.
std::shared_ptr<regex> parse_pattern(const json_node& node) {
    if (!node.value.is_object() || node.value.size() != 1) {
        node.fail("expected {\"String\": ...} or {\"Regex\": ...}");
    }
    if (const auto s = node.get("String"))
        return std::make_shared<regex>(escape_literal(s->str()), *s);
    if (const auto r = node.get("Regex")) return std::make_shared<regex>(r->str(), *r);
    node.fail("expected {\"String\": ...} or {\"Regex\": ...}");
}

// -- splitting (HF Pattern + SplitDelimiterBehavior) ---------------------------------------

struct match_span {
    uint32_t begin;
    uint32_t end;
    bool is_match;
};

struct span {
    uint32_t begin;
    uint32_t end;
};

// Covers `subject` with alternating gaps and matches (HF Pattern::find_matches).
void find_matches(const regex& re, std::string_view subject, std::vector<match_span>& out) {
    out.clear();
    if (subject.empty()) {
        out.push_back({0, 0, false});
        return;
    }
    size_t prev = 0;
    re.for_each_match(subject, [&](size_t begin, size_t end) {
        if (prev != begin) out.push_back({uint32_t(prev), uint32_t(begin), false});
        out.push_back({uint32_t(begin), uint32_t(end), true});
        prev = end;
    });
    if (prev != subject.size()) out.push_back({uint32_t(prev), uint32_t(subject.size()), false});
}

template <class Pred>
void find_char_matches(std::string_view subject, Pred pred, std::vector<match_span>& out) {
    out.clear();
    if (subject.empty()) {
        out.push_back({0, 0, false});
        return;
    }
    size_t last = 0;
    size_t pos = 0;
    while (pos < subject.size()) {
        size_t len = 0;
        const uint32_t cp = decode_cp(subject, pos, &len);
        if (pred(cp)) {
            if (last < pos) out.push_back({uint32_t(last), uint32_t(pos), false});
            out.push_back({uint32_t(pos), uint32_t(pos + len), true});
            last = pos + len;
        }
        pos += len;
    }
    if (subject.size() > last) out.push_back({uint32_t(last), uint32_t(subject.size()), false});
}

enum class split_behavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

// Applies the behaviour to the matches of one piece and appends the kept, non-empty spans
// (offset by `base`) to `out`.
void apply_split(const std::vector<match_span>& matches, split_behavior behavior, uint32_t base,
                 std::vector<match_span>& scratch, std::vector<span>& out) {
    // (begin, end, remove) tuples reuse match_span with is_match = "remove".
    scratch.clear();
    switch (behavior) {
        case split_behavior::isolated:
            for (const auto& m : matches) scratch.push_back({m.begin, m.end, false});
            break;
        case split_behavior::removed:
            scratch = matches;
            break;
        case split_behavior::contiguous: {
            bool previous_match = false;
            for (const auto& m : matches) {
                if (m.is_match == previous_match && !scratch.empty()) {
                    scratch.back().end = m.end;
                } else {
                    scratch.push_back({m.begin, m.end, false});
                }
                previous_match = m.is_match;
            }
            break;
        }
        case split_behavior::merged_with_previous: {
            bool previous_match = false;
            for (const auto& m : matches) {
                if (m.is_match && !previous_match && !scratch.empty()) {
                    scratch.back().end = m.end;
                } else {
                    scratch.push_back({m.begin, m.end, false});
                }
                previous_match = m.is_match;
            }
            break;
        }
        case split_behavior::merged_with_next: {
            bool previous_match = false;
            for (auto it = matches.rbegin(); it != matches.rend(); ++it) {
                if (it->is_match && !previous_match && !scratch.empty()) {
                    scratch.back().begin = it->begin;
                } else {
                    scratch.push_back({it->begin, it->end, false});
                }
                previous_match = it->is_match;
            }
            std::reverse(scratch.begin(), scratch.end());
            break;
        }
    }
    for (const auto& s : scratch) {
        if (!s.is_match && s.end > s.begin) out.push_back({base + s.begin, base + s.end});
    }
}

// -- pipeline steps --------------------------------------------------------------------------

enum class normalizer_kind {
    nfc,
    nfd,
    nfkc,
    nfkd,
    lowercase,
    strip,
    strip_accents,
    replace,
    prepend
};

struct normalizer_step {
    normalizer_kind kind;
    bool strip_left = false;
    bool strip_right = false;
    std::string content{};  // Replace: the replacement; Prepend: the prefix
    std::shared_ptr<regex> pattern{};
};

enum class pre_tokenizer_kind { byte_level, split, digits };

struct pre_tokenizer_step {
    pre_tokenizer_kind kind;
    bool add_prefix_space = false;
    bool use_regex = true;
    bool individual_digits = false;
    bool invert = false;
    split_behavior behavior = split_behavior::isolated;
    std::shared_ptr<regex> pattern{};
};

enum class decoder_kind { byte_level, byte_fallback, fuse, strip, replace };

struct decoder_step {
    decoder_kind kind;
    uint32_t strip_char = 0;
    size_t strip_start = 0;
    size_t strip_stop = 0;
    std::string content{};
    std::shared_ptr<regex> pattern{};
};

struct template_piece {
    bool is_sequence;      // $A / $B, else a special token
    int sequence_idx = 0;  // 0 = A, 1 = B
    std::vector<int32_t> special_ids;
};

enum class post_processor_kind { byte_level, template_processing };

struct post_processor_step {
    post_processor_kind kind;
    std::vector<template_piece> single{};
    std::vector<template_piece> pair{};
};

// Token ids index dense tables; far above any real vocabulary (LongCat: 131072).
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// -- added-token matching ---------------------------------------------------------------------

// A byte trie for leftmost-longest matching of the added tokens.
class token_trie {
  public:
    token_trie() { nodes_.emplace_back(); }

    void insert(std::string_view key, int32_t id) {
        if (key.empty()) return;
        first_byte_[static_cast<unsigned char>(key[0])] = true;
        uint32_t node = 0;
        for (const char c : key) {
            const auto b = static_cast<unsigned char>(c);
            auto& children = nodes_[node].children;
            auto it = std::lower_bound(children.begin(), children.end(), b,
                                       [](const auto& e, unsigned char v) { return e.first < v; });
            if (it != children.end() && it->first == b) {
                node = it->second;
            } else {
                const auto next = static_cast<uint32_t>(nodes_.size());
                children.insert(it, {b, next});
                nodes_.emplace_back();
                node = next;
            }
        }
        nodes_[node].id = id;
        empty_ = false;
    }
    bool empty() const { return empty_; }

    // The longest key starting at `pos`: {length, id}; length 0 when none.
    std::pair<size_t, int32_t> longest_at(std::string_view text, size_t pos) const {
        if (!first_byte_[static_cast<unsigned char>(text[pos])]) return {0, -1};
        uint32_t node = 0;
        std::pair<size_t, int32_t> best{0, -1};
        for (size_t k = pos; k < text.size(); ++k) {
            const auto b = static_cast<unsigned char>(text[k]);
            const auto& children = nodes_[node].children;
            auto it = std::lower_bound(children.begin(), children.end(), b,
                                       [](const auto& e, unsigned char v) { return e.first < v; });
            if (it == children.end() || it->first != b) break;
            node = it->second;
            if (nodes_[node].id >= 0) best = {k + 1 - pos, nodes_[node].id};
        }
        return best;
    }

  private:
    struct node {
        std::vector<std::pair<unsigned char, uint32_t>> children;  // sorted by byte
        int32_t id = -1;
    };
    std::vector<node> nodes_;
    std::array<bool, 256> first_byte_{};
    bool empty_ = true;
};

// A piece of text: either an added token (id >= 0) or text still to tokenize.
struct text_piece {
    uint32_t begin;
    uint32_t end;
    int32_t id;
};

// -- BPE ---------------------------------------------------------------------------------

struct string_hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

template <class V>
using string_map = std::unordered_map<std::string, V, string_hash, std::equal_to<>>;

// Caches the ids of frequent words (HF: words under 256 bytes, up to 10000 of them).
class word_cache {
  public:
    static constexpr size_t kMaxWordBytes = 256;
    static constexpr size_t kCapacity = 10000;

    bool lookup(std::string_view word, std::vector<int32_t>& out) const {
        auto& shard = shard_for(word);
        std::lock_guard<std::mutex> lock(shard.mu);
        const auto it = shard.map.find(word);
        if (it == shard.map.end()) return false;
        out.insert(out.end(), it->second.begin(), it->second.end());
        return true;
    }
    void insert(std::string_view word, const int32_t* ids, size_t num_ids) const {
        auto& shard = shard_for(word);
        std::lock_guard<std::mutex> lock(shard.mu);
        if (shard.map.size() >= kCapacity / kNumShards) return;
        shard.map.emplace(std::string(word), std::vector<int32_t>(ids, ids + num_ids));
    }

  private:
    static constexpr size_t kNumShards = 16;
    struct shard {
        std::mutex mu;
        string_map<std::vector<int32_t>> map;
    };
    shard& shard_for(std::string_view word) const {
        return shards_[string_hash{}(word) % kNumShards];
    }
    mutable std::array<shard, kNumShards> shards_;
};

struct bpe_symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    uint32_t len;  // bytes; 0 marks a symbol merged into its left neighbour
};

struct bpe_merge_candidate {
    uint32_t rank;
    uint32_t pos;
    int32_t new_id;
    bool operator>(const bpe_merge_candidate& other) const {
        return rank != other.rank ? rank > other.rank : pos > other.pos;
    }
};

struct bpe_scratch {
    std::vector<bpe_symbol> symbols;
    std::vector<bpe_merge_candidate> heap;
    std::string key;
};

struct bpe_model {
    string_map<int32_t> vocab;
    std::unordered_map<uint64_t, std::pair<uint32_t, int32_t>> merges;  // (a, b) -> (rank, id)
    std::optional<std::string> unk_token;
    std::optional<std::string> continuing_subword_prefix;
    std::optional<std::string> end_of_word_suffix;
    bool fuse_unk = false;
    bool byte_fallback = false;
    bool ignore_merges = false;
    std::array<int32_t, 256> byte_ids{};  // id of <0xNN>, -1 when absent
    std::string origin;
    word_cache cache;

    static uint64_t pair_key(int32_t a, int32_t b) {
        return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
    }

    void tokenize(std::string_view word, std::vector<int32_t>& out, bpe_scratch& scratch) const {
        if (word.empty()) return;
        if (ignore_merges) {
            const auto it = vocab.find(word);
            if (it != vocab.end()) {
                out.push_back(it->second);
                return;
            }
        }
        const bool cacheable = word.size() < word_cache::kMaxWordBytes;
        if (cacheable && cache.lookup(word, out)) return;
        const size_t first = out.size();
        merge_word(word, out, scratch);
        if (cacheable) cache.insert(word, out.data() + first, out.size() - first);
    }

    void merge_word(std::string_view word, std::vector<int32_t>& out, bpe_scratch& scratch) const {
        auto& symbols = scratch.symbols;
        symbols.clear();
        auto add = [&](int32_t id, uint32_t len) {
            const auto idx = static_cast<int32_t>(symbols.size());
            if (idx > 0) symbols.back().next = idx;
            symbols.push_back({id, idx - 1, -1, len});
        };
        int32_t pending_unk = -1;
        uint32_t pending_unk_len = 0;
        size_t pos = 0;
        while (pos < word.size()) {
            const size_t len =
                std::min(utf8_seq_len(static_cast<unsigned char>(word[pos])), word.size() - pos);
            const bool is_first = pos == 0;
            const bool is_last = pos + len == word.size();
            std::string_view key = word.substr(pos, len);
            const bool with_prefix = !is_first && continuing_subword_prefix.has_value();
            const bool with_suffix = is_last && end_of_word_suffix.has_value();
            if (with_prefix || with_suffix) {
                scratch.key.clear();
                if (with_prefix) scratch.key += *continuing_subword_prefix;
                scratch.key += key;
                if (with_suffix) scratch.key += *end_of_word_suffix;
                key = scratch.key;
            }
            pos += len;
            const auto it = vocab.find(key);
            if (it != vocab.end()) {
                if (pending_unk >= 0) {
                    add(pending_unk, pending_unk_len);
                    pending_unk = -1;
                }
                add(it->second, static_cast<uint32_t>(len));
                continue;
            }
            if (byte_fallback) {
                bool all_bytes = true;
                for (const char c : key) all_bytes &= byte_ids[static_cast<unsigned char>(c)] >= 0;
                if (all_bytes) {
                    // NOTES: like HF, a pending unk is not flushed before byte tokens.
                    for (const char c : key) add(byte_ids[static_cast<unsigned char>(c)], 1);
                    continue;
                }
            }
            if (unk_token.has_value()) {
                const auto unk = vocab.find(*unk_token);
                if (unk == vocab.end()) {
                    throw model_error(origin + ": /model/unk_token: unk token \"" + *unk_token +
                                      "\" is not in the vocabulary");
                }
                if (pending_unk >= 0 && fuse_unk) {
                    pending_unk_len += static_cast<uint32_t>(len);
                } else {
                    if (pending_unk >= 0) add(pending_unk, pending_unk_len);
                    pending_unk = unk->second;
                    pending_unk_len = static_cast<uint32_t>(len);
                }
            }
            // Without unk_token an unknown character is dropped, as in HF.
        }
        if (pending_unk >= 0) add(pending_unk, pending_unk_len);
        merge_all(scratch);
        for (const auto& s : symbols) {
            if (s.len != 0) out.push_back(s.id);
        }
    }

    // Applies merges lowest rank first (leftmost among equal ranks), as HF's Word::merge_all.
    void merge_all(bpe_scratch& scratch) const {
        auto& symbols = scratch.symbols;
        auto& heap = scratch.heap;
        heap.clear();
        const auto push = [&](bpe_merge_candidate c) {
            heap.push_back(c);
            std::push_heap(heap.begin(), heap.end(), std::greater<>{});
        };
        for (size_t idx = 0; idx + 1 < symbols.size(); ++idx) {
            const auto it = merges.find(pair_key(symbols[idx].id, symbols[idx + 1].id));
            if (it != merges.end()) push({it->second.first, uint32_t(idx), it->second.second});
        }
        while (!heap.empty()) {
            std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
            const bpe_merge_candidate top = heap.back();
            heap.pop_back();
            bpe_symbol& current = symbols[top.pos];
            if (current.len == 0 || current.next == -1) continue;
            const auto next_pos = static_cast<size_t>(current.next);
            const bpe_symbol right = symbols[next_pos];
            const auto it = merges.find(pair_key(current.id, right.id));
            if (it == merges.end() || it->second.second != top.new_id) continue;

            current.id = top.new_id;
            current.len += right.len;
            current.next = right.next;
            symbols[next_pos].len = 0;
            if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = int32_t(top.pos);

            const bpe_symbol merged = symbols[top.pos];
            if (merged.prev >= 0) {
                const auto prev = static_cast<size_t>(merged.prev);
                const auto m = merges.find(pair_key(symbols[prev].id, merged.id));
                if (m != merges.end()) push({m->second.first, uint32_t(prev), m->second.second});
            }
            if (merged.next >= 0) {
                const auto next = static_cast<size_t>(merged.next);
                const auto m = merges.find(pair_key(merged.id, symbols[next].id));
                if (m != merges.end()) push({m->second.first, top.pos, m->second.second});
            }
        }
    }
};

// Per-encode scratch space.
struct encode_scratch {
    std::string normalized;
    std::string norm_tmp;
    std::string pre_tmp;
    std::string text_a;
    std::string text_b;
    std::vector<span> spans_a;
    std::vector<span> spans_b;
    std::vector<match_span> matches;
    std::vector<match_span> split_tmp;
    std::vector<text_piece> pieces;
    std::vector<text_piece> sub_pieces;
    bpe_scratch bpe;
};

bool parse_byte_token(std::string_view token, uint8_t* byte) {
    // HF: six bytes "<0xHH>", parsed with u8::from_str_radix (which also takes "+H").
    if (token.size() != 6 || token.substr(0, 3) != "<0x" || token[5] != '>') return false;
    const auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    const int hi = hex(token[3]);
    const int lo = hex(token[4]);
    if (token[3] == '+' && lo >= 0) {
        *byte = static_cast<uint8_t>(lo);
        return true;
    }
    if (hi < 0 || lo < 0) return false;
    *byte = static_cast<uint8_t>(hi * 16 + lo);
    return true;
}

}  // namespace

// -- the tokenizer's data ---------------------------------------------------------------------

struct tokenizer::impl {
    std::string origin;
    std::vector<normalizer_step> normalizers;
    bool has_pre_tokenizer = false;
    std::vector<pre_tokenizer_step> pre_tokenizers;
    bpe_model model;
    bool has_post_processor = false;
    std::vector<post_processor_step> post_processors;
    bool has_decoder = false;
    std::vector<decoder_step> decoders;

    std::vector<added_token> added;  // in file order, ids as HF assigns them
    string_map<int32_t> added_by_content;
    std::unordered_map<int32_t, size_t> added_by_id;  // id -> index into `added`
    token_trie raw_trie;         // normalized = false tokens, matched on the raw text
    token_trie normalized_trie;  // normalized = true tokens, matched after normalizing

    // Indexed by id: the text id_to_token gives, the text the decoder sees, flags.
    std::vector<std::string> id_text;
    std::unordered_map<int32_t, std::string> decode_text_override;  // normalized added tokens
    enum : uint8_t { kPresent = 1, kSpecial = 2, kByteToken = 4 };
    std::vector<uint8_t> id_flags;
    bool decoder_has_byte_fallback = false;

    tokenizer_config config;
    int32_t bos_id = -1;
    int32_t eos_id = -1;
    int32_t pad_id = -1;
    int32_t unk_id = -1;

    // -- encoding -----------------------------------------------------------------------

    void normalize(std::string& s, std::string& tmp) const {
        for (const auto& step : normalizers) {
            switch (step.kind) {
                case normalizer_kind::nfc:
                case normalizer_kind::nfd:
                case normalizer_kind::nfkc:
                case normalizer_kind::nfkd: {
                    if (is_ascii(s)) break;
                    int options = UTF8PROC_STABLE;
                    if (step.kind == normalizer_kind::nfc || step.kind == normalizer_kind::nfkc) {
                        options |= UTF8PROC_COMPOSE;
                    } else {
                        options |= UTF8PROC_DECOMPOSE;
                    }
                    if (step.kind == normalizer_kind::nfkc || step.kind == normalizer_kind::nfkd) {
                        options |= UTF8PROC_COMPAT;
                    }
                    utf8proc_uint8_t* result = nullptr;
                    const auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()),
                                                static_cast<utf8proc_ssize_t>(s.size()), &result,
                                                static_cast<utf8proc_option_t>(options));
                    if (n < 0) {
                        throw model_error(origin + ": normalizer: " + utf8proc_errmsg(n));
                    }
                    s.assign(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
                    std::free(result);
                    break;
                }
                case normalizer_kind::lowercase: {
                    tmp.clear();
                    size_t pos = 0;
                    while (pos < s.size()) {
                        size_t len = 0;
                        const uint32_t cp = decode_cp(s, pos, &len);
                        pos += len;
                        if (cp < 0x80) {
                            tmp.push_back(static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
                        } else if (cp == 0x130) {  // the one unconditional multi-char mapping
                            tmp += "i\xCC\x87";
                        } else {
                            append_cp(tmp, static_cast<uint32_t>(utf8proc_tolower(
                                               static_cast<utf8proc_int32_t>(cp))));
                        }
                    }
                    s.swap(tmp);
                    break;
                }
                case normalizer_kind::strip: {
                    size_t begin = 0;
                    size_t end = s.size();
                    while (step.strip_left && begin < end) {
                        size_t len = 0;
                        if (!is_white_space(decode_cp(s, begin, &len))) break;
                        begin += len;
                    }
                    while (step.strip_right && end > begin) {
                        size_t start = 0;
                        if (!is_white_space(decode_cp_before(s, end, &start))) break;
                        end = start;
                    }
                    s = s.substr(begin, end - begin);
                    break;
                }
                case normalizer_kind::strip_accents: {
                    tmp.clear();
                    size_t pos = 0;
                    while (pos < s.size()) {
                        size_t len = 0;
                        const uint32_t cp = decode_cp(s, pos, &len);
                        if (!is_combining_mark(cp)) tmp.append(s, pos, len);
                        pos += len;
                    }
                    s.swap(tmp);
                    break;
                }
                case normalizer_kind::replace: {
                    if (s.empty()) break;
                    tmp.clear();
                    size_t prev = 0;
                    step.pattern->for_each_match(s, [&](size_t begin, size_t end) {
                        tmp.append(s, prev, begin - prev);
                        tmp += step.content;
                        prev = end;
                    });
                    tmp.append(s, prev, std::string::npos);
                    s.swap(tmp);
                    break;
                }
                case normalizer_kind::prepend:
                    if (!s.empty()) s.insert(0, step.content);
                    break;
            }
        }
    }

    // Splits `text` around the added tokens of `trie` (HF AddedVocabulary::find_matches).
    void find_added(std::string_view text, const token_trie& trie,
                    std::vector<text_piece>& out) const {
        out.clear();
        if (trie.empty()) {
            out.push_back({0, uint32_t(text.size()), -1});
            return;
        }
        size_t start_offset = 0;
        size_t pos = 0;
        while (pos < text.size()) {
            const auto [len, id] = trie.longest_at(text, pos);
            if (len == 0) {
                ++pos;
                continue;
            }
            size_t start = pos;
            size_t stop = pos + len;
            pos = stop;  // the search resumes after the match even when it is discarded
            const added_token& tok = added[added_by_id.at(id)];
            if (tok.single_word) {
                size_t cp_start = 0;
                const bool start_space =
                    start == 0 || !is_word_char(decode_cp_before(text, start, &cp_start));
                size_t cp_len = 0;
                const bool stop_space =
                    stop == text.size() || !is_word_char(decode_cp(text, stop, &cp_len));
                if (!start_space || !stop_space) continue;
            }
            if (tok.lstrip) {
                size_t new_start = start;
                while (new_start > 0) {
                    size_t cp_start = 0;
                    if (!is_white_space(decode_cp_before(text, new_start, &cp_start))) break;
                    new_start = cp_start;
                }
                start = std::max(new_start, start_offset);
            }
            if (tok.rstrip) {
                while (stop < text.size()) {
                    size_t cp_len = 0;
                    if (!is_white_space(decode_cp(text, stop, &cp_len))) break;
                    stop += cp_len;
                }
            }
            if (start_offset < start) out.push_back({uint32_t(start_offset), uint32_t(start), -1});
            out.push_back({uint32_t(start), uint32_t(stop), id});
            start_offset = stop;
        }
        if (start_offset != text.size()) {
            out.push_back({uint32_t(start_offset), uint32_t(text.size()), -1});
        }
    }

    // Pre-tokenizes one normalized piece and runs the model over the words.
    void tokenize_piece(std::string_view piece, std::vector<int32_t>& ids,
                        encode_scratch& scratch) const {
        if (!has_pre_tokenizer || pre_tokenizers.empty()) {
            model.tokenize(piece, ids, scratch.bpe);
            return;
        }
        std::string* text = &scratch.text_a;
        std::string* next_text = &scratch.text_b;
        auto* spans = &scratch.spans_a;
        auto* next_spans = &scratch.spans_b;
        text->assign(piece);
        spans->assign(1, span{0, uint32_t(piece.size())});
        for (const auto& step : pre_tokenizers) {
            next_spans->clear();
            switch (step.kind) {
                case pre_tokenizer_kind::split:
                    for (const auto& s : *spans) {
                        const std::string_view sub(text->data() + s.begin, s.end - s.begin);
                        find_matches(*step.pattern, sub, scratch.matches);
                        if (step.invert) {
                            for (auto& m : scratch.matches) m.is_match = !m.is_match;
                        }
                        apply_split(scratch.matches, step.behavior, s.begin, scratch.split_tmp,
                                    *next_spans);
                    }
                    std::swap(spans, next_spans);
                    break;
                case pre_tokenizer_kind::digits:
                    for (const auto& s : *spans) {
                        const std::string_view sub(text->data() + s.begin, s.end - s.begin);
                        find_char_matches(sub, is_numeric, scratch.matches);
                        apply_split(scratch.matches,
                                    step.individual_digits ? split_behavior::isolated
                                                           : split_behavior::contiguous,
                                    s.begin, scratch.split_tmp, *next_spans);
                    }
                    std::swap(spans, next_spans);
                    break;
                case pre_tokenizer_kind::byte_level:
                    next_text->clear();
                    for (const auto& s : *spans) {
                        std::string_view sub(text->data() + s.begin, s.end - s.begin);
                        if (step.add_prefix_space && sub.front() != ' ') {
                            scratch.pre_tmp.assign(1, ' ');
                            scratch.pre_tmp.append(sub);
                            sub = scratch.pre_tmp;
                        }
                        const auto emit = [&](std::string_view word) {
                            const auto begin = uint32_t(next_text->size());
                            append_byte_level(*next_text, word);
                            next_spans->push_back({begin, uint32_t(next_text->size())});
                        };
                        if (step.use_regex) {
                            find_matches(*step.pattern, sub, scratch.matches);
                            for (const auto& m : scratch.matches) {
                                if (m.end > m.begin) emit(sub.substr(m.begin, m.end - m.begin));
                            }
                        } else {
                            emit(sub);
                        }
                    }
                    std::swap(text, next_text);
                    std::swap(spans, next_spans);
                    break;
            }
        }
        for (const auto& s : *spans) {
            model.tokenize(std::string_view(text->data() + s.begin, s.end - s.begin), ids,
                           scratch.bpe);
        }
    }

    std::vector<int32_t> encode_sequence(std::string_view text) const {
        const size_t bad = find_invalid_utf8(text);
        if (bad != std::string_view::npos) {
            throw model_error(origin + ": encode: the text is not valid UTF-8 (byte " +
                              std::to_string(bad) + ")");
        }
        std::vector<int32_t> ids;
        encode_scratch scratch;
        std::vector<text_piece> pieces;
        find_added(text, raw_trie, pieces);
        for (const auto& piece : pieces) {
            if (piece.id >= 0) {
                ids.push_back(piece.id);
                continue;
            }
            if (piece.end == piece.begin) continue;
            scratch.normalized.assign(text.substr(piece.begin, piece.end - piece.begin));
            normalize(scratch.normalized, scratch.norm_tmp);
            const std::string& normalized = scratch.normalized;
            if (normalized.empty()) continue;
            find_added(normalized, normalized_trie, scratch.sub_pieces);
            for (const auto& sub : scratch.sub_pieces) {
                if (sub.id >= 0) {
                    ids.push_back(sub.id);
                } else if (sub.end > sub.begin) {
                    tokenize_piece(
                        std::string_view(normalized).substr(sub.begin, sub.end - sub.begin), ids,
                        scratch);
                }
            }
        }
        return ids;
    }

    // -- post-processing ----------------------------------------------------------------

    std::vector<int32_t> post_process(std::vector<std::vector<int32_t>> encodings,
                                      bool add_special_tokens) const {
        if (!has_post_processor) {
            if (add_special_tokens) {
                // tokenizer_config.json's add_bos_token / add_eos_token (see the header).
                for (auto& enc : encodings) {
                    if (config.add_bos_token.value_or(false) && bos_id >= 0) {
                        enc.insert(enc.begin(), bos_id);
                    }
                    if (config.add_eos_token.value_or(false) && eos_id >= 0) enc.push_back(eos_id);
                }
            }
        }
        for (const auto& step : post_processors) {
            switch (step.kind) {
                case post_processor_kind::byte_level:
                    break;  // offsets only
                case post_processor_kind::template_processing: {
                    const auto& tmpl = encodings.size() == 2 ? step.pair : step.single;
                    std::vector<int32_t> merged;
                    for (const auto& piece : tmpl) {
                        if (piece.is_sequence) {
                            const auto idx = static_cast<size_t>(piece.sequence_idx);
                            if (idx < encodings.size()) {
                                merged.insert(merged.end(), encodings[idx].begin(),
                                              encodings[idx].end());
                            }
                        } else if (add_special_tokens) {
                            merged.insert(merged.end(), piece.special_ids.begin(),
                                          piece.special_ids.end());
                        }
                    }
                    encodings.assign(1, std::move(merged));
                    break;
                }
            }
        }
        std::vector<int32_t> out;
        for (const auto& enc : encodings) out.insert(out.end(), enc.begin(), enc.end());
        return out;
    }

    // -- decoding -----------------------------------------------------------------------

    bool present(int32_t id) const {
        return id >= 0 && static_cast<size_t>(id) < id_flags.size() && (id_flags[id] & kPresent);
    }
    bool special(int32_t id) const { return present(id) && (id_flags[id] & kSpecial); }
    bool byte_token(int32_t id) const { return present(id) && (id_flags[id] & kByteToken); }
    const std::string& decode_text(int32_t id) const {
        if (!decode_text_override.empty()) {
            const auto it = decode_text_override.find(id);
            if (it != decode_text_override.end()) return it->second;
        }
        return id_text[static_cast<size_t>(id)];
    }

    std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
        std::vector<std::string> tokens;
        tokens.reserve(ids.size());
        for (const int32_t id : ids) {
            if (!present(id)) continue;
            if (skip_special_tokens && special(id)) continue;
            tokens.push_back(decode_text(id));
        }
        if (!has_decoder) {
            std::string out;
            for (size_t idx = 0; idx < tokens.size(); ++idx) {
                if (idx > 0) out.push_back(' ');
                out += tokens[idx];
            }
            return out;
        }
        for (const auto& step : decoders) apply_decoder(step, tokens);
        std::string out;
        for (const auto& t : tokens) out += t;
        return out;
    }

    static void apply_decoder(const decoder_step& step, std::vector<std::string>& tokens) {
        switch (step.kind) {
            case decoder_kind::byte_level: {
                const auto& map = byte_map();
                std::string bytes;
                for (const auto& token : tokens) {
                    const size_t mark = bytes.size();
                    bool all_mapped = true;
                    size_t pos = 0;
                    while (pos < token.size()) {
                        size_t len = 0;
                        const uint32_t cp = decode_cp(token, pos, &len);
                        pos += len;
                        if (cp >= map.byte_of_cp.size() || map.byte_of_cp[cp] < 0) {
                            all_mapped = false;
                            break;
                        }
                        bytes.push_back(static_cast<char>(map.byte_of_cp[cp]));
                    }
                    if (!all_mapped) {
                        bytes.resize(mark);
                        bytes += token;
                    }
                }
                std::string text;
                append_lossy_utf8(text, bytes);
                tokens.assign(1, std::move(text));
                break;
            }
            case decoder_kind::byte_fallback: {
                std::vector<std::string> out;
                out.reserve(tokens.size());
                std::string pending;
                const auto flush = [&] {
                    if (pending.empty()) return;
                    if (find_invalid_utf8(pending) == std::string_view::npos) {
                        out.push_back(pending);
                    } else {
                        for (size_t k = 0; k < pending.size(); ++k)
                            out.emplace_back(kReplacementChar);
                    }
                    pending.clear();
                };
                for (auto& token : tokens) {
                    uint8_t byte = 0;
                    if (parse_byte_token(token, &byte)) {
                        pending.push_back(static_cast<char>(byte));
                    } else {
                        flush();
                        out.push_back(std::move(token));
                    }
                }
                flush();
                tokens.swap(out);
                break;
            }
            case decoder_kind::fuse: {
                std::string joined;
                for (const auto& t : tokens) joined += t;
                tokens.assign(1, std::move(joined));
                break;
            }
            case decoder_kind::strip:
                for (auto& token : tokens) {
                    std::vector<std::pair<uint32_t, size_t>> chars;  // (code point, offset)
                    size_t pos = 0;
                    while (pos < token.size()) {
                        size_t len = 0;
                        chars.push_back({decode_cp(token, pos, &len), pos});
                        pos += len;
                    }
                    size_t start_cut = 0;
                    for (size_t k = 0; k < std::min(step.strip_start, chars.size()); ++k) {
                        if (chars[k].first != step.strip_char) break;
                        start_cut = k + 1;
                    }
                    size_t stop_cut = chars.size();
                    for (size_t k = 0; k < std::min(step.strip_stop, chars.size()); ++k) {
                        const size_t index = chars.size() - k - 1;
                        if (chars[index].first != step.strip_char) break;
                        stop_cut = index;
                    }
                    if (stop_cut <= start_cut) {
                        token.clear();
                        continue;
                    }
                    const size_t begin =
                        start_cut < chars.size() ? chars[start_cut].second : token.size();
                    const size_t end =
                        stop_cut < chars.size() ? chars[stop_cut].second : token.size();
                    token = token.substr(begin, end - begin);
                }
                break;
            case decoder_kind::replace:
                for (auto& token : tokens) {
                    if (token.empty()) continue;
                    std::string replaced;
                    size_t prev = 0;
                    step.pattern->for_each_match(token, [&](size_t begin, size_t end) {
                        replaced.append(token, prev, begin - prev);
                        replaced += step.content;
                        prev = end;
                    });
                    replaced.append(token, prev, std::string::npos);
                    token.swap(replaced);
                }
                break;
        }
    }

    // -- loading ------------------------------------------------------------------------

    // Sequences inside sequences: each level recurses (and copies its JSON path), so a file of
    // a megabyte nesting them could exhaust the stack. Real tokenizers nest one or two deep.
    static constexpr int kMaxSequenceDepth = 16;
    static std::string sequence_too_deep() {
        return "Sequence nested deeper than " + std::to_string(kMaxSequenceDepth) + " levels";
    }

    void parse_normalizer(const json_node& node, int depth = 0) {
        const json_node type = node["type"];
        const std::string& name = type.str();
        if (name == "Sequence") {
            if (depth >= kMaxSequenceDepth) type.fail(sequence_too_deep());
            const json_node list = node["normalizers"];
            for (size_t idx = 0; idx < list.array_size(); ++idx)
                parse_normalizer(list.at(idx), depth + 1);
        } else if (name == "NFC") {
            normalizers.push_back({normalizer_kind::nfc});
        } else if (name == "NFD") {
            normalizers.push_back({normalizer_kind::nfd});
        } else if (name == "NFKC") {
            normalizers.push_back({normalizer_kind::nfkc});
        } else if (name == "NFKD") {
            normalizers.push_back({normalizer_kind::nfkd});
        } else if (name == "Lowercase") {
            normalizers.push_back({normalizer_kind::lowercase});
        } else if (name == "StripAccents") {
            normalizers.push_back({normalizer_kind::strip_accents});
        } else if (name == "Strip") {
            normalizer_step step{normalizer_kind::strip};
            step.strip_left = node["strip_left"].boolean();
            step.strip_right = node["strip_right"].boolean();
            normalizers.push_back(std::move(step));
        } else if (name == "Replace") {
            normalizer_step step{normalizer_kind::replace};
            step.pattern = parse_pattern(node["pattern"]);
            step.content = node["content"].str();
            normalizers.push_back(std::move(step));
        } else if (name == "Prepend") {
            normalizer_step step{normalizer_kind::prepend};
            step.content = node["prepend"].str();
            normalizers.push_back(std::move(step));
        } else {
            type.fail("unsupported normalizer \"" + name + "\"");
        }
    }

    void parse_pre_tokenizer(const json_node& node, int depth = 0) {
        const json_node type = node["type"];
        const std::string& name = type.str();
        if (name == "Sequence") {
            if (depth >= kMaxSequenceDepth) type.fail(sequence_too_deep());
            const json_node list = node["pretokenizers"];
            for (size_t idx = 0; idx < list.array_size(); ++idx)
                parse_pre_tokenizer(list.at(idx), depth + 1);
        } else if (name == "ByteLevel") {
            pre_tokenizer_step step{pre_tokenizer_kind::byte_level};
            step.add_prefix_space = node.bool_or("add_prefix_space", true);
            node.bool_or("trim_offsets", true);  // offsets only
            step.use_regex = node.bool_or("use_regex", true);
            if (step.use_regex) step.pattern = std::make_shared<regex>(kGpt2Pattern, node);
            pre_tokenizers.push_back(std::move(step));
        } else if (name == "Split") {
            pre_tokenizer_step step{pre_tokenizer_kind::split};
            step.pattern = parse_pattern(node["pattern"]);
            const json_node behavior = node["behavior"];
            const std::string& b = behavior.str();
            if (b == "Removed") {
                step.behavior = split_behavior::removed;
            } else if (b == "Isolated") {
                step.behavior = split_behavior::isolated;
            } else if (b == "MergedWithPrevious") {
                step.behavior = split_behavior::merged_with_previous;
            } else if (b == "MergedWithNext") {
                step.behavior = split_behavior::merged_with_next;
            } else if (b == "Contiguous") {
                step.behavior = split_behavior::contiguous;
            } else {
                behavior.fail("unknown split behavior \"" + b + "\"");
            }
            step.invert = node.bool_or("invert", false);
            pre_tokenizers.push_back(std::move(step));
        } else if (name == "Digits") {
            pre_tokenizer_step step{pre_tokenizer_kind::digits};
            step.individual_digits = node.bool_or("individual_digits", false);
            pre_tokenizers.push_back(std::move(step));
        } else {
            type.fail("unsupported pre-tokenizer \"" + name + "\"");
        }
    }

    void parse_decoder(const json_node& node, int depth = 0) {
        const json_node type = node["type"];
        const std::string& name = type.str();
        if (name == "Sequence") {
            if (depth >= kMaxSequenceDepth) type.fail(sequence_too_deep());
            const json_node list = node["decoders"];
            for (size_t idx = 0; idx < list.array_size(); ++idx)
                parse_decoder(list.at(idx), depth + 1);
        } else if (name == "ByteLevel") {
            decoders.push_back({decoder_kind::byte_level});
        } else if (name == "ByteFallback") {
            decoders.push_back({decoder_kind::byte_fallback});
            decoder_has_byte_fallback = true;
        } else if (name == "Fuse") {
            decoders.push_back({decoder_kind::fuse});
        } else if (name == "Strip") {
            decoder_step step{decoder_kind::strip};
            const json_node content = node["content"];
            const std::string& c = content.str();
            size_t len = 0;
            if (c.empty() || find_invalid_utf8(c) != std::string_view::npos ||
                (step.strip_char = decode_cp(c, 0, &len), len != c.size())) {
                content.fail("expected exactly one character");
            }
            const auto count = [](const json_node& n) {
                const int64_t v = n.integer();
                if (v < 0) n.fail("expected a count >= 0");
                return static_cast<size_t>(v);
            };
            step.strip_start = count(node["start"]);
            step.strip_stop = count(node["stop"]);
            decoders.push_back(std::move(step));
        } else if (name == "Replace") {
            decoder_step step{decoder_kind::replace};
            step.pattern = parse_pattern(node["pattern"]);
            step.content = node["content"].str();
            decoders.push_back(std::move(step));
        } else {
            type.fail("unsupported decoder \"" + name + "\"");
        }
    }

    std::vector<template_piece> parse_template(
        const json_node& list,
        const std::unordered_map<std::string, std::vector<int32_t>>& specials) {
        std::vector<template_piece> pieces;
        for (size_t idx = 0; idx < list.array_size(); ++idx) {
            const json_node item = list.at(idx);
            template_piece piece{};
            const auto set_special = [&](const json_node& where, const std::string& name) {
                const auto it = specials.find(name);
                if (it == specials.end()) {
                    where.fail("special token \"" + name +
                               "\" is not in the post_processor's special_tokens");
                }
                piece.special_ids = it->second;
            };
            if (item.value.is_string()) {
                // The short form: "$A", "$B:1", "<s>", "<s>:0".
                std::string s = item.str();
                const auto colon = s.rfind(':');
                if (colon != std::string::npos && colon > 0) s = s.substr(0, colon);
                const bool digits = s.size() > 1 && std::all_of(s.begin() + 1, s.end(), [](char c) {
                                        return c >= '0' && c <= '9';
                                    });
                if (s == "$" || s == "$A" || s == "$a" || (s[0] == '$' && digits)) {
                    piece.is_sequence = true;
                } else if (s == "$B" || s == "$b") {
                    piece.is_sequence = true;
                    piece.sequence_idx = 1;
                } else if (s[0] == '$') {
                    item.fail("bad template piece \"" + s + "\"");
                } else {
                    set_special(item, s);
                }
            } else if (const auto seq = item.get("Sequence")) {
                const json_node id = (*seq)["id"];
                if (id.str() == "A") {
                    piece.is_sequence = true;
                } else if (id.str() == "B") {
                    piece.is_sequence = true;
                    piece.sequence_idx = 1;
                } else {
                    id.fail("expected \"A\" or \"B\"");
                }
            } else if (const auto tok = item.get("SpecialToken")) {
                const json_node id = (*tok)["id"];
                set_special(id, id.str());
            } else {
                item.fail("expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
            }
            pieces.push_back(std::move(piece));
        }
        return pieces;
    }

    void parse_post_processor(const json_node& node, int depth = 0) {
        const json_node type = node["type"];
        const std::string& name = type.str();
        if (name == "Sequence") {
            if (depth >= kMaxSequenceDepth) type.fail(sequence_too_deep());
            const json_node list = node["processors"];
            for (size_t idx = 0; idx < list.array_size(); ++idx) {
                parse_post_processor(list.at(idx), depth + 1);
            }
        } else if (name == "ByteLevel") {
            post_processors.push_back({post_processor_kind::byte_level});
        } else if (name == "TemplateProcessing") {
            std::unordered_map<std::string, std::vector<int32_t>> specials;
            if (const auto tokens = node.get("special_tokens")) {
                if (!tokens->value.is_object()) tokens->fail("expected an object");
                for (const auto& [key, value] : tokens->value.items()) {
                    const json_node entry{value, tokens->path + "/" + pointer_token(key), origin};
                    const json_node list = entry["ids"];
                    std::vector<int32_t> ids;
                    for (size_t idx = 0; idx < list.array_size(); ++idx) {
                        const int64_t v = list.at(idx).integer();
                        if (v < 0 || v > kMaxTokenId) list.at(idx).fail("id out of range");
                        ids.push_back(static_cast<int32_t>(v));
                    }
                    specials[key] = std::move(ids);
                }
            }
            post_processor_step step{post_processor_kind::template_processing};
            step.single = parse_template(node["single"], specials);
            step.pair = parse_template(node["pair"], specials);
            post_processors.push_back(std::move(step));
        } else {
            type.fail("unsupported post-processor \"" + name + "\"");
        }
    }

    void parse_model(const json_node& node) {
        if (const auto type = node.get("type")) {
            if (type->str() != "BPE") type->fail("unsupported model \"" + type->str() + "\"");
        }
        model.origin = origin;
        const json_node vocab = node["vocab"];
        if (!vocab.value.is_object())
            vocab.fail(std::string("expected an object, got ") + json_type_name(vocab.value));
        model.vocab.reserve(vocab.value.size());
        for (const auto& [token, value] : vocab.value.items()) {
            const json_node entry{value, vocab.path + "/" + pointer_token(token), origin};
            const int64_t id = entry.integer();
            if (id < 0 || id > kMaxTokenId) entry.fail("id out of range");
            model.vocab[token] = static_cast<int32_t>(id);
        }
        if (const auto d = node.get("dropout")) {
            const double p = d->number();
            if (p < 0.0 || p > 1.0) d->fail("dropout must be in [0, 1]");
            if (p > 0.0) d->fail("BPE dropout is not supported (it makes encoding random)");
        }
        if (const auto u = node.get("unk_token")) model.unk_token = u->str();
        if (const auto p = node.get("continuing_subword_prefix")) {
            model.continuing_subword_prefix = p->str();
        }
        if (const auto s = node.get("end_of_word_suffix")) model.end_of_word_suffix = s->str();
        model.fuse_unk = node.bool_or("fuse_unk", false);
        model.byte_fallback = node.bool_or("byte_fallback", false);
        model.ignore_merges = node.bool_or("ignore_merges", false);
        model.byte_ids.fill(-1);
        for (uint32_t b = 0; b < 256; ++b) {
            char name[8];
            std::snprintf(name, sizeof(name), "<0x%02X>", b);
            const auto it = model.vocab.find(std::string_view(name));
            if (it != model.vocab.end()) model.byte_ids[b] = it->second;
        }

        const json_node merges = node["merges"];
        const size_t num_merges = merges.array_size();
        model.merges.reserve(num_merges);
        const size_t prefix_len =
            model.continuing_subword_prefix ? model.continuing_subword_prefix->size() : 0;
        uint32_t rank = 0;
        std::string merged;
        for (size_t idx = 0; idx < num_merges; ++idx) {
            const json_node entry = merges.at(idx);
            std::string a;
            std::string b;
            if (entry.value.is_string()) {
                const std::string& line = entry.str();
                if (line.rfind("#version", 0) == 0) continue;
                const auto space = line.find(' ');
                if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
                    entry.fail("bad merge \"" + line +
                               "\": expected two tokens separated by one space");
                }
                a = line.substr(0, space);
                b = line.substr(space + 1);
            } else if (entry.value.is_array()) {
                if (entry.value.size() != 2) entry.fail("bad merge: expected a pair of tokens");
                a = entry.at(0).str();
                b = entry.at(1).str();
            } else {
                entry.fail(std::string("bad merge: expected a string or a pair, got ") +
                           json_type_name(entry.value));
            }
            const auto lookup = [&](const std::string& token) {
                const auto it = model.vocab.find(token);
                if (it == model.vocab.end()) {
                    entry.fail("bad merge: token \"" + token + "\" is not in the vocabulary");
                }
                return it->second;
            };
            const int32_t a_id = lookup(a);
            const int32_t b_id = lookup(b);
            if (b.size() < prefix_len) {
                entry.fail("bad merge: \"" + b + "\" is shorter than continuing_subword_prefix");
            }
            merged = a;
            merged.append(b, prefix_len, std::string::npos);
            const int32_t new_id = lookup(merged);
            model.merges[bpe_model::pair_key(a_id, b_id)] = {rank, new_id};
            ++rank;
        }
    }

    void add_tokens(const json_node& list) {
        const size_t model_vocab_size = model.vocab.size();
        int32_t next_id = static_cast<int32_t>(model_vocab_size);
        for (size_t idx = 0; idx < list.array_size(); ++idx) {
            const json_node entry = list.at(idx);
            added_token tok;
            const int64_t declared = entry["id"].integer();
            if (declared < 0 || declared > kMaxTokenId) entry["id"].fail("id out of range");
            tok.content = entry["content"].str();
            tok.single_word = entry.bool_or("single_word", false);
            tok.lstrip = entry.bool_or("lstrip", false);
            tok.rstrip = entry.bool_or("rstrip", false);
            tok.special = entry.bool_or("special", false);
            tok.normalized = entry.bool_or("normalized", !tok.special);
            if (tok.content.empty()) continue;
            if (find_invalid_utf8(tok.content) != std::string_view::npos) {
                entry["content"].fail("not valid UTF-8");
            }
            // HF: the id of an existing token wins; a new one gets the next free id.
            int32_t id = -1;
            if (const auto it = added_by_content.find(tok.content); it != added_by_content.end()) {
                id = it->second;
            } else if (const auto m = model.vocab.find(tok.content); m != model.vocab.end()) {
                id = m->second;
            } else {
                id = next_id++;
            }
            tok.id = id;
            added_by_content[tok.content] = id;
            if (const auto it = added_by_id.find(id); it != added_by_id.end()) {
                added[it->second] = tok;
            } else {
                added_by_id[id] = added.size();
                added.push_back(tok);
            }
        }
    }

    void build_tables() {
        int64_t max_id = -1;
        for (const auto& [token, id] : model.vocab) max_id = std::max<int64_t>(max_id, id);
        for (const auto& tok : added) max_id = std::max<int64_t>(max_id, tok.id);
        // The tables are indexed by id: ids far sparser than any real vocabulary would make a
        // small file allocate a table of millions of strings.
        const auto entries = static_cast<int64_t>(model.vocab.size() + added.size());
        if (max_id >= 2 * entries + 65536)
            throw model_error(origin + ": token id " + std::to_string(max_id) + " for " +
                              std::to_string(entries) +
                              " entries: ids this sparse are not a vocabulary");
        id_text.assign(static_cast<size_t>(max_id + 1), std::string());
        id_flags.assign(static_cast<size_t>(max_id + 1), 0);
        for (const auto& [token, id] : model.vocab) {
            if (id_flags[id] & kPresent) continue;
            id_text[id] = token;
            id_flags[id] = kPresent;
        }
        std::unordered_set<std::string> special_contents;
        std::string scratch;
        for (const auto& tok : added) {
            id_text[tok.id] = tok.content;
            id_flags[tok.id] = kPresent;
            if (tok.special) special_contents.insert(tok.content);
            std::string pattern = tok.content;
            if (tok.normalized && !normalizers.empty()) {
                normalize(pattern, scratch);
                if (pattern != tok.content) decode_text_override[tok.id] = pattern;
            }
            if (tok.normalized) {
                normalized_trie.insert(pattern, tok.id);
            } else {
                raw_trie.insert(tok.content, tok.id);
            }
        }
        // HF decides "special" on the text the decoder sees.
        for (size_t id = 0; id < id_flags.size(); ++id) {
            if (!(id_flags[id] & kPresent)) continue;
            const std::string& text = decode_text(static_cast<int32_t>(id));
            if (special_contents.count(text) != 0) id_flags[id] |= kSpecial;
            uint8_t byte = 0;
            if (parse_byte_token(text, &byte)) id_flags[id] |= kByteToken;
        }
    }

    std::optional<int32_t> token_to_id(std::string_view token) const {
        if (const auto it = added_by_content.find(token); it != added_by_content.end()) {
            return it->second;
        }
        if (const auto it = model.vocab.find(token); it != model.vocab.end()) return it->second;
        return std::nullopt;
    }

    void parse_config(std::string_view text, const std::string& config_origin) {
        const json doc = parse_json_text(text, config_origin);
        const json_node root{doc, "", config_origin};
        if (!doc.is_object()) root.fail("expected an object");
        config.origin = config_origin;
        const auto token_field = [&](std::string_view key, std::string& out, int32_t& id) {
            const auto node = root.get(key);
            if (!node) return;
            if (node->value.is_string()) {
                out = node->str();
            } else if (node->value.is_object()) {
                out = (*node)["content"].str();
            } else {
                node->fail("expected a string or an AddedToken object");
            }
            const auto found = token_to_id(out);
            if (!found) node->fail("token \"" + out + "\" is not in the vocabulary");
            id = *found;
        };
        token_field("bos_token", config.bos_token, bos_id);
        token_field("eos_token", config.eos_token, eos_id);
        token_field("pad_token", config.pad_token, pad_id);
        token_field("unk_token", config.unk_token, unk_id);
        if (const auto b = root.get("add_bos_token")) config.add_bos_token = b->boolean();
        if (const auto e = root.get("add_eos_token")) config.add_eos_token = e->boolean();
        if (const auto t = root.get("chat_template")) {
            if (t->value.is_string()) {
                config.chat_template = t->str();
            } else if (t->value.is_array()) {
                // [{"name": ..., "template": ...}]: record the "default" one, else the first.
                for (size_t idx = 0; idx < t->array_size(); ++idx) {
                    const json_node item = t->at(idx);
                    const std::string& name = item["name"].str();
                    const std::string& body = item["template"].str();
                    if (idx == 0 || name == "default") config.chat_template = body;
                }
            } else {
                t->fail("expected a string or a list of named templates");
            }
            config.has_chat_template = true;
        }
    }

    void apply_default_special_ids() {
        const auto fallback = [&](int32_t& id, std::string_view token) {
            if (id >= 0) return;
            if (const auto found = token_to_id(token)) id = *found;
        };
        fallback(bos_id, "<longcat_s>");
        fallback(eos_id, "</longcat_s>");
        fallback(pad_id, "<longcat_pad>");
        if (unk_id < 0 && model.unk_token) {
            if (const auto found = token_to_id(*model.unk_token)) unk_id = *found;
        }
    }

    void load(std::string_view text) {
        const json doc = parse_json_text(text, origin);
        const json_node root{doc, "", origin};
        if (!doc.is_object()) root.fail("expected an object");
        if (const auto version = root.get("version")) {
            if (version->str() != "1.0")
                version->fail("unknown tokenizer version \"" + version->str() + "\"");
        }
        // "truncation" and "padding" are ignored: transformers overrides both on every call.
        if (const auto n = root.get("normalizer")) parse_normalizer(*n);
        if (const auto p = root.get("pre_tokenizer")) {
            has_pre_tokenizer = true;
            parse_pre_tokenizer(*p);
        }
        const auto model_node = root.get("model");
        if (!model_node) throw model_error(origin + ": /model: missing");
        parse_model(*model_node);
        if (const auto p = root.get("post_processor")) {
            has_post_processor = true;
            parse_post_processor(*p);
        }
        if (const auto d = root.get("decoder")) {
            has_decoder = true;
            parse_decoder(*d);
        }
        if (const auto list = root.get("added_tokens")) add_tokens(*list);
        build_tables();
    }
};

// -- tokenizer ---------------------------------------------------------------------------------

tokenizer::tokenizer(std::shared_ptr<const impl> impl) : impl_(std::move(impl)) {}

tokenizer tokenizer::from_json(std::string_view tokenizer_json, const std::string& origin) {
    auto data = std::make_shared<impl>();
    data->origin = origin;
    data->load(tokenizer_json);
    data->apply_default_special_ids();
    return tokenizer(std::move(data));
}

tokenizer tokenizer::from_json(std::string_view tokenizer_json, const std::string& origin,
                               std::string_view config_json, const std::string& config_origin) {
    auto data = std::make_shared<impl>();
    data->origin = origin;
    data->load(tokenizer_json);
    data->parse_config(config_json, config_origin);
    data->apply_default_special_ids();
    return tokenizer(std::move(data));
}

tokenizer tokenizer::load(const std::filesystem::path& tokenizer_json) {
    return from_json(read_file(tokenizer_json), tokenizer_json.string());
}

tokenizer tokenizer::load(const std::filesystem::path& tokenizer_json,
                          const std::filesystem::path& tokenizer_config_json) {
    return from_json(read_file(tokenizer_json), tokenizer_json.string(),
                     read_file(tokenizer_config_json), tokenizer_config_json.string());
}

tokenizer tokenizer::load_dir(const std::filesystem::path& dir) {
    const auto config = dir / "tokenizer_config.json";
    if (std::filesystem::exists(config)) return load(dir / "tokenizer.json", config);
    return load(dir / "tokenizer.json");
}

std::vector<int32_t> tokenizer::encode(std::string_view text, bool add_special_tokens) const {
    std::vector<std::vector<int32_t>> encodings;
    encodings.push_back(impl_->encode_sequence(text));
    return impl_->post_process(std::move(encodings), add_special_tokens);
}

std::vector<int32_t> tokenizer::encode_pair(std::string_view text_a, std::string_view text_b,
                                            bool add_special_tokens) const {
    std::vector<std::vector<int32_t>> encodings;
    encodings.push_back(impl_->encode_sequence(text_a));
    encodings.push_back(impl_->encode_sequence(text_b));
    return impl_->post_process(std::move(encodings), add_special_tokens);
}

std::string tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
    return impl_->decode(ids, skip_special_tokens);
}

int64_t tokenizer::vocab_size() const { return static_cast<int64_t>(impl_->id_flags.size()); }

std::optional<int32_t> tokenizer::token_to_id(std::string_view token) const {
    return impl_->token_to_id(token);
}

std::optional<std::string_view> tokenizer::id_to_token(int32_t id) const {
    if (!impl_->present(id)) return std::nullopt;
    return std::string_view(impl_->id_text[static_cast<size_t>(id)]);
}

bool tokenizer::is_special(int32_t id) const { return impl_->special(id); }

const std::vector<added_token>& tokenizer::added_tokens() const { return impl_->added; }

int32_t tokenizer::bos_id() const { return impl_->bos_id; }
int32_t tokenizer::eos_id() const { return impl_->eos_id; }
int32_t tokenizer::pad_id() const { return impl_->pad_id; }
int32_t tokenizer::unk_id() const { return impl_->unk_id; }

const tokenizer_config& tokenizer::config() const { return impl_->config; }
bool tokenizer::has_chat_template() const { return impl_->config.has_chat_template; }
const std::string& tokenizer::origin() const { return impl_->origin; }

// -- stream_decoder ------------------------------------------------------------------------------

stream_decoder::stream_decoder(const tokenizer& tok, bool skip_special_tokens)
    : impl_(tok.impl_), skip_special_tokens_(skip_special_tokens) {}

std::string stream_decoder::push(int32_t id) {
    window_.push_back(id);
    const bool contributes = impl_->present(id) && !(skip_special_tokens_ && impl_->special(id));
    if (contributes) tail_is_byte_ = impl_->decoder_has_byte_fallback && impl_->byte_token(id);
    // A run of <0xNN> tokens decodes as one group (an invalid group becomes one U+FFFD per
    // byte), so nothing is final until the run ends.
    if (tail_is_byte_) return {};
    std::string text = impl_->decode(window_, skip_special_tokens_);
    if (text.size() <= prefix_.size() || ends_with(text, kReplacementChar)) return {};
    if (text.compare(0, prefix_.size(), prefix_) != 0) {
        throw model_error(impl_->origin +
                          ": stream_decoder: the decoder is not incremental "
                          "(the text of earlier tokens changed)");
    }
    std::string out = text.substr(prefix_.size());
    // The emitted tokens stay in the window as context for the next decode.
    window_.erase(window_.begin(), window_.begin() + static_cast<std::ptrdiff_t>(prefix_count_));
    prefix_count_ = window_.size();
    prefix_ = impl_->decode(window_, skip_special_tokens_);
    return out;
}

std::string stream_decoder::flush() {
    const std::string text = impl_->decode(window_, skip_special_tokens_);
    std::string out;
    if (text.size() > prefix_.size()) {
        if (text.compare(0, prefix_.size(), prefix_) != 0) {
            throw model_error(impl_->origin +
                              ": stream_decoder: the decoder is not incremental "
                              "(the text of earlier tokens changed)");
        }
        out = text.substr(prefix_.size());
    }
    reset();
    return out;
}

void stream_decoder::reset() {
    window_.clear();
    prefix_count_ = 0;
    prefix_.clear();
    tail_is_byte_ = false;
}

}  // namespace longcat::model
