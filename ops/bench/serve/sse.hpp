// sse: an incremental parser for a text/event-stream body (the WHATWG server-sent events format
// that OpenAI-compatible servers stream), header-only and free of I/O so that it can be
// unit-tested alone.
// Owns: the bytes of a line not yet ended and the data lines of the event not yet dispatched.
// Receives: body bytes in arbitrary pieces (feed). Emits: the data of each complete event, its
// "data:" lines joined by '\n' (on_event), which for OpenAI streams is one JSON object or "[DONE]".
//
// NOTES: lines end with "\n", "\r\n" or "\r" (a "\r\n" split across two pieces is one line end);
// a blank line dispatches the event; an event without data lines is not dispatched; comment
// lines (":...") and the fields event/id/retry are ignored; one space after "data:" is removed.
#pragma once

#include <string>
#include <string_view>

namespace longcat::bench {

class sse_parser {
  public:
    // Parses `bytes`, calling on_event(std::string_view data) for every event completed by them.
    template <class on_event_fn>
    void feed(std::string_view bytes, on_event_fn&& on_event) {
        for (char c : bytes) {
            if (skip_lf_) {
                skip_lf_ = false;
                if (c == '\n') continue;
            }
            if (c == '\r' || c == '\n') {
                skip_lf_ = c == '\r';
                end_line(on_event);
                continue;
            }
            line_.push_back(c);
        }
    }

    // The body ended: dispatches an event whose blank line never came (a lenient reading; the
    // standard drops it). Leaves the parser empty.
    template <class on_event_fn>
    void finish(on_event_fn&& on_event) {
        if (!line_.empty()) end_line(on_event);
        dispatch(on_event);
        skip_lf_ = false;
    }

  private:
    template <class on_event_fn>
    void end_line(on_event_fn& on_event) {
        if (line_.empty()) {
            dispatch(on_event);
            return;
        }
        std::string_view line = line_;
        const size_t colon = line.find(':');
        const std::string_view field = line.substr(0, colon);
        if (field == "data") {
            std::string_view value =
                colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
            if (value.starts_with(' ')) value.remove_prefix(1);
            if (has_data_) data_.push_back('\n');
            data_.append(value);
            has_data_ = true;
        }
        line_.clear();
    }

    template <class on_event_fn>
    void dispatch(on_event_fn& on_event) {
        if (has_data_) on_event(std::string_view(data_));
        data_.clear();
        has_data_ = false;
    }

    std::string line_;       // the current line, without its end
    std::string data_;       // the data lines of the current event, joined by '\n'
    bool has_data_ = false;  // the current event has at least one data line
    bool skip_lf_ = false;   // the previous byte was '\r': a following '\n' belongs to it
};

}  // namespace longcat::bench
