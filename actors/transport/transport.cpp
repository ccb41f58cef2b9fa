#include "actors/transport/transport.hpp"

#include <sanitizer/asan_interface.h>  // ASAN_(UN)POISON_MEMORY_REGION: no-ops without ASan
#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

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

namespace {

struct payload_graveyard {
    std::mutex mutex;
    std::vector<std::shared_ptr<const void>> owners;
    retained_payload_stats stats;
};

payload_graveyard& graveyard() {
    static auto* yard = new payload_graveyard;  // never destroyed: UCX may read until exit
    return *yard;
}

}  // namespace

void retain_payload(std::shared_ptr<const void> owner, size_t num_bytes) {
    payload_graveyard& yard = graveyard();
    std::lock_guard lock(yard.mutex);
    yard.owners.push_back(std::move(owner));
    ++yard.stats.payloads;
    yard.stats.bytes += num_bytes;
}

retained_payload_stats retained_payloads() {
    payload_graveyard& yard = graveyard();
    std::lock_guard lock(yard.mutex);
    return yard.stats;
}

std::string_view to_string(memory_type memory) {
    switch (memory) {
        case memory_type::host: return "host";
        case memory_type::cuda: return "cuda";
    }
    return "unknown";
}

// -- byte_buffer -------------------------------------------------------------------------------

namespace {

// Extents of whole huge pages, mapped once and reused: a frame buffer taken per received frame
// would otherwise fault and zero-fill every page of it each time (or, from the heap, sit on 4 KiB
// pages). A request takes the smallest cached extent that holds it and is at most twice its
// size (a dispatch frame's size follows the step's token count, so exact sizes would rarely
// repeat); the buffer keeps and gives back the whole extent. Given-back extents are kept up to
// kMaxCachedBytes, the oldest unmapped first. One mutex: a few list operations per frame.
class extent_cache {
  public:
    static constexpr size_t kMaxCachedBytes = size_t{512} << 20;

    // The extent taken (>= `extent`, a multiple of the huge page) and its bytes.
    std::pair<std::byte*, size_t> take(size_t extent) {
        {
            std::lock_guard lock(mutex_);
            // Among equal sizes the one given back last: its bytes are likeliest still cached.
            size_t best = free_.size();
            for (size_t i = free_.size(); i-- > 0;) {
                const size_t have = free_[i].second;
                if (have >= extent && have / 2 <= extent &&
                    (best == free_.size() || have < free_[best].second))
                    best = i;
            }
            if (best < free_.size()) {
                const auto [p, have] = free_[best];
                free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
                cached_bytes_ -= have;
                ++reused_;
                ASAN_UNPOISON_MEMORY_REGION(p, have);
                return {p, have};
            }
        }
        // Map one huge page more than needed, keep the aligned middle.
        const size_t span = extent + byte_buffer::kHugePageBytes;
        void* raw =
            ::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (raw == MAP_FAILED) throw std::bad_alloc();
        const auto base = reinterpret_cast<uintptr_t>(raw);
        const uintptr_t aligned =
            (base + byte_buffer::kHugePageBytes - 1) & ~(byte_buffer::kHugePageBytes - 1);
        if (aligned > base) ::munmap(raw, aligned - base);
        const uintptr_t end = aligned + extent;
        if (base + span > end) ::munmap(reinterpret_cast<void*>(end), base + span - end);
        // Advice only: without transparent huge pages the extent works on small pages.
        ::madvise(reinterpret_cast<void*>(aligned), extent, MADV_HUGEPAGE);
        {
            std::lock_guard lock(mutex_);
            ++mapped_;
        }
        return {reinterpret_cast<std::byte*>(aligned), extent};
    }

    void give(std::byte* p, size_t extent) {
        std::vector<std::pair<std::byte*, size_t>> evicted;
        {
            std::lock_guard lock(mutex_);
            // Under ASan a cached extent is poisoned: a use after its buffer let go of it is
            // reported as if the memory had been freed.
            ASAN_POISON_MEMORY_REGION(p, extent);
            free_.emplace_back(p, extent);
            cached_bytes_ += extent;
            size_t oldest = 0;
            while (cached_bytes_ > kMaxCachedBytes) {
                cached_bytes_ -= free_[oldest].second;
                evicted.push_back(free_[oldest++]);
            }
            free_.erase(free_.begin(), free_.begin() + static_cast<std::ptrdiff_t>(oldest));
        }
        for (const auto& [q, bytes] : evicted) {
            ASAN_UNPOISON_MEMORY_REGION(q, bytes);
            ::munmap(q, bytes);
        }
    }

    large_buffer_stats stats() {
        std::lock_guard lock(mutex_);
        return {mapped_, reused_, cached_bytes_};
    }

  private:
    std::mutex mutex_;
    std::vector<std::pair<std::byte*, size_t>> free_;
    uint64_t cached_bytes_ = 0;
    uint64_t mapped_ = 0;
    uint64_t reused_ = 0;
};

// Never destroyed: buffers may be let go of by static destructors.
extent_cache& extents() {
    static extent_cache* cache = new extent_cache;
    return *cache;
}

}  // namespace

large_buffer_stats large_buffer_cache_stats() { return extents().stats(); }

byte_buffer::byte_buffer(size_t num_bytes) : size_(num_bytes) {
    if (num_bytes >= kLargeBytes) {
        if (num_bytes > SIZE_MAX - kHugePageBytes) throw std::bad_alloc();
        const auto [bytes, extent] =
            extents().take((num_bytes + kHugePageBytes - 1) & ~(kHugePageBytes - 1));
        data_ = bytes;
        extent_ = extent;
    } else if (num_bytes > 0) {
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
    } else if (extent_ > 0) {
        extents().give(data_, extent_);
    } else if (data_ != nullptr) {
        ::operator delete (data_, std::align_val_t{kAlignment});
    }
    data_ = nullptr;
    size_ = 0;
    extent_ = 0;
}

byte_buffer::~byte_buffer() { release(); }

byte_buffer::byte_buffer(byte_buffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      extent_(std::exchange(other.extent_, 0)),
      owner_(std::move(other.owner_)) {}

byte_buffer& byte_buffer::operator=(byte_buffer&& other) noexcept {
    if (this != &other) {
        release();
        data_ = std::exchange(other.data_, nullptr);
        size_ = std::exchange(other.size_, 0);
        extent_ = std::exchange(other.extent_, 0);
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
