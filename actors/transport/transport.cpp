#include "actors/transport/transport.hpp"

#include <cstring>
#include <new>
#include <utility>

namespace longcat::transport {

std::string_view to_string(transport_error error) {
    switch (error) {
        case transport_error::timeout: return "timeout";
        case transport_error::peer_failed: return "peer_failed";
        case transport_error::version_mismatch: return "version_mismatch";
        case transport_error::bad_frame: return "bad_frame";
        case transport_error::closed: return "closed";
        case transport_error::unknown_peer: return "unknown_peer";
        case transport_error::bad_address: return "bad_address";
        case transport_error::unsupported_memory: return "unsupported_memory";
        case transport_error::setup_failed: return "setup_failed";
    }
    return "unknown";
}

proto::unexpected<transport_failure> make_failure(transport_error code, std::string_view message) {
    std::string text(to_string(code));
    text += ": ";
    text += message;
    return proto::unexpected(transport_failure{code, std::move(text)});
}

std::string_view to_string(memory_type memory) {
    switch (memory) {
        case memory_type::host: return "host";
        case memory_type::cuda: return "cuda";
    }
    return "unknown";
}

// -- byte_buffer -------------------------------------------------------------------------------

byte_buffer::byte_buffer(size_t num_bytes) : size_(num_bytes) {
    if (num_bytes > 0) {
        data_ = static_cast<std::byte*>(::operator new (num_bytes, std::align_val_t{kAlignment}));
    }
}

byte_buffer byte_buffer::copy_of(std::span<const std::byte> bytes) {
    byte_buffer out(bytes.size());
    if (!bytes.empty()) std::memcpy(out.data_, bytes.data(), bytes.size());
    return out;
}

byte_buffer byte_buffer::adopt(std::span<std::byte> bytes, std::shared_ptr<void> owner) {
    if (!owner) return copy_of(bytes);
    byte_buffer out;
    out.data_ = bytes.data();
    out.size_ = bytes.size();
    out.owner_ = std::move(owner);
    return out;
}

void byte_buffer::release() {
    if (owner_) {
        owner_.reset();
    } else if (data_ != nullptr) {
        ::operator delete (data_, std::align_val_t{kAlignment});
    }
    data_ = nullptr;
    size_ = 0;
}

byte_buffer::~byte_buffer() { release(); }

byte_buffer::byte_buffer(byte_buffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      owner_(std::move(other.owner_)) {}

byte_buffer& byte_buffer::operator=(byte_buffer&& other) noexcept {
    if (this != &other) {
        release();
        data_ = std::exchange(other.data_, nullptr);
        size_ = std::exchange(other.size_, 0);
        owner_ = std::move(other.owner_);
    }
    return *this;
}

// -- peers and filters -------------------------------------------------------------------------

std::string to_string(peer_id peer) { return "peer#" + std::to_string(peer.value); }

bool frame_filter::matches(peer_id from, const proto::frame_header& header) const {
    if (peer && *peer != from) return false;
    if (kind && *kind != header.kind) return false;
    if (step_id && *step_id != header.step_id) return false;
    if (layer && *layer != header.layer) return false;
    if (micro_batch && *micro_batch != header.micro_batch) return false;
    if (request_id && *request_id != header.request_id) return false;
    if (predicate && !predicate(from, header)) return false;
    return true;
}

std::string describe_peer(const peer_info& info) {
    if (!info.name.empty() && !info.address.empty()) return info.name + " (" + info.address + ")";
    if (!info.name.empty()) return info.name;
    if (!info.address.empty()) return info.address;
    return to_string(info.id);
}

}  // namespace longcat::transport
