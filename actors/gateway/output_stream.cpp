#include "actors/gateway/output_stream.hpp"

#include <algorithm>

namespace longcat::gateway {

stop_matcher::stop_matcher(std::vector<std::string> stop_strings) : stops_(std::move(stop_strings)) {
    std::erase_if(stops_, [](const std::string& stop) { return stop.empty(); });
}

stop_matcher::result stop_matcher::push(std::string_view text) {
    result out;
    if (matched_) return out;
    held_.append(text);
    // Every occurrence in held_ ends in the new text (an older one would have matched before),
    // so the first occurrence of each stop string is its earliest-ending one.
    size_t best_start = std::string::npos, best_end = std::string::npos;
    for (const std::string& stop : stops_) {
        const size_t start = held_.find(stop);
        if (start == std::string::npos) continue;
        const size_t end = start + stop.size();
        if (end < best_end || (end == best_end && start < best_start)) {
            best_start = start;
            best_end = end;
        }
    }
    if (best_start != std::string::npos) {
        out.text = held_.substr(0, best_start);
        out.matched = true;
        matched_ = true;
        held_.clear();
        return out;
    }
    // Hold the longest suffix that is a proper prefix of some stop string.
    size_t hold = 0;
    for (const std::string& stop : stops_) {
        for (size_t len = std::min(stop.size() - 1, held_.size()); len > hold; --len) {
            if (std::string_view(held_).substr(held_.size() - len) == std::string_view(stop).substr(0, len)) {
                hold = len;
                break;
            }
        }
    }
    out.text = held_.substr(0, held_.size() - hold);
    held_.erase(0, held_.size() - hold);
    return out;
}

std::string stop_matcher::finish() {
    std::string out;
    out.swap(held_);
    if (matched_) out.clear();
    return out;
}

output_stream::output_stream(const model::tokenizer& tokenizer, std::vector<std::string> stop_strings)
    : decoder_(tokenizer, /*skip_special_tokens=*/true), matcher_(std::move(stop_strings)) {}

output_stream::piece output_stream::push(std::span<const int32_t> ids) {
    piece out;
    for (const int32_t id : ids) {
        if (matcher_.matched() || finished_) break;
        ++num_tokens_;
        stop_matcher::result result = matcher_.push(decoder_.push(id));
        out.text += result.text;
        out.stop_matched = result.matched;
    }
    return out;
}

output_stream::piece output_stream::finish() {
    piece out;
    if (matcher_.matched() || finished_) return out;
    finished_ = true;
    stop_matcher::result result = matcher_.push(decoder_.flush());
    out.text = std::move(result.text);
    out.stop_matched = result.matched;
    out.text += matcher_.finish();
    return out;
}

}  // namespace longcat::gateway
