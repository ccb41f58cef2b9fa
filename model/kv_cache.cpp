#include "model/kv_cache.hpp"

#include <cstring>
#include <string>

#include <algorithm>
#include <stdexcept>

#include "model/error.hpp"

namespace longcat::model {

kv_cache::kv_cache(const model_config& cfg, const kv_cache_options& opts, bool with_mtp)
    : opts_(opts), num_layers_(cfg.num_layers), row_dim_(cfg.kv_lora_rank + cfg.qk_rope_head_dim) {
    if (opts.page_size <= 0 || opts.num_pages <= 0)
        throw model_error("kv_cache: page_size and num_pages must be positive");
    if (opts.type != kernels::dtype::f32 && opts.type != kernels::dtype::bf16)
        throw model_error("kv_cache: dtype must be f32 or bf16, got " +
                          std::string(kernels::dtype_name(opts.type)));
    const int64_t num_pools = 2 * cfg.num_layers + (with_mtp ? 1 : 0);
    const size_t bytes = static_cast<size_t>(opts.num_pages * opts.page_size * row_dim_) *
                         kernels::dtype_size(opts.type);
    pools_.assign(static_cast<size_t>(num_pools), std::vector<uint8_t>(bytes, 0));
    free_.resize(static_cast<size_t>(opts.num_pages));
    for (int64_t p = 0; p < opts.num_pages; ++p)
        free_[static_cast<size_t>(p)] = static_cast<int32_t>(opts.num_pages - 1 - p);
}

kernels::kv_pool_view kv_cache::pool(int64_t block_idx) {
    if (block_idx < 0 || block_idx >= num_pools())
        throw std::out_of_range("kv_cache: attention block index out of range");
    return kernels::kv_pool_view{pools_[static_cast<size_t>(block_idx)].data(), opts_.type,
                                 opts_.page_size, row_dim_};
}

bool kv_cache::reserve(std::vector<int32_t>& page_table, int64_t num_tokens) {
    const int64_t need = pages_for_tokens(num_tokens) - static_cast<int64_t>(page_table.size());
    if (need <= 0) return true;
    if (need > num_free_pages()) return false;
    for (int64_t i = 0; i < need; ++i) {
        page_table.push_back(free_.back());
        free_.pop_back();
    }
    return true;
}

void kv_cache::release(std::vector<int32_t>& page_table) {
    for (auto it = page_table.rbegin(); it != page_table.rend(); ++it) free_.push_back(*it);
    page_table.clear();
}

std::vector<int32_t> kv_cache::take_pages(int64_t count) {
    std::vector<int32_t> taken;
    if (!reserve(taken, count * opts_.page_size))
        throw model_error("kv_cache: not enough free pages");
    return taken;
}

int64_t kv_cache::row_bytes() const {
    return row_dim_ * static_cast<int64_t>(kernels::dtype_size(opts_.type));
}

namespace {

// Throws unless rows [begin, begin + count) of a pool of `num_pools` lie inside the table.
void check_rows(const std::vector<int32_t>& page_table, int64_t page_size, int64_t num_pools,
                int64_t pool, int64_t begin, int64_t count, const char* what) {
    if (pool < 0 || pool >= num_pools)
        throw model_error(std::string("kv_cache ") + what + ": pool " + std::to_string(pool) +
                          " does not exist (" + std::to_string(num_pools) + " pools)");
    const int64_t covered = static_cast<int64_t>(page_table.size()) * page_size;
    if (begin < 0 || count < 0 || begin + count > covered)
        throw model_error(std::string("kv_cache ") + what + ": rows [" + std::to_string(begin) + ", " +
                          std::to_string(begin + count) + ") are outside the page table (" +
                          std::to_string(covered) + " rows)");
}

}  // namespace

void kv_cache::export_rows(const std::vector<int32_t>& page_table, int64_t pool, int64_t begin,
                           int64_t count, void* out) const {
    check_rows(page_table, opts_.page_size, num_pools(), pool, begin, count, "export");
    const auto rb = static_cast<size_t>(row_bytes());
    const uint8_t* base = pools_[static_cast<size_t>(pool)].data();
    auto* dst = static_cast<uint8_t*>(out);
    for (int64_t pos = begin; pos < begin + count; ++pos) {
        const int64_t page = page_table[static_cast<size_t>(pos / opts_.page_size)];
        const int64_t slot = page * opts_.page_size + pos % opts_.page_size;
        std::memcpy(dst + static_cast<size_t>(pos - begin) * rb, base + static_cast<size_t>(slot) * rb, rb);
    }
}

void kv_cache::import_rows(const std::vector<int32_t>& page_table, int64_t pool, int64_t begin,
                           int64_t count, const void* rows) {
    check_rows(page_table, opts_.page_size, num_pools(), pool, begin, count, "import");
    const auto rb = static_cast<size_t>(row_bytes());
    uint8_t* base = pools_[static_cast<size_t>(pool)].data();
    const auto* src = static_cast<const uint8_t*>(rows);
    for (int64_t pos = begin; pos < begin + count; ++pos) {
        const int64_t page = page_table[static_cast<size_t>(pos / opts_.page_size)];
        const int64_t slot = page * opts_.page_size + pos % opts_.page_size;
        std::memcpy(base + static_cast<size_t>(slot) * rb, src + static_cast<size_t>(pos - begin) * rb, rb);
    }
}

}  // namespace longcat::model
