// kv_cache: the paged latent KV cache of one attention worker (ARCHITECTURE.md §5).
// One pool per attention block (2·num_layers, plus one for the MTP layer); a request's page
// table gives the same page ids in every pool, so one block's pages are a gather.
//
// layout of one pool: [num_pages][page_size][row_dim], row_dim = kv_lora_rank + qk_rope_head_dim
//   row = [ c_kv (kv_lora_rank): after kv_a_layernorm and ×sqrt(hidden/kv_lora_rank)
//         | k_rope (qk_rope_head_dim): after RoPE, de-interleaved order [rot evens | rot odds] ]
//   dtype fp32 or bf16 (round to nearest even on write).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/api/ops.hpp"
#include "model/config.hpp"

namespace longcat::model {

struct kv_cache_options {
    int64_t page_size = 16;
    int64_t num_pages = 1024;
    kernels::dtype type = kernels::dtype::f32;  // f32 | bf16
};

class kv_cache {
public:
    kv_cache(const model_config& cfg, const kv_cache_options& opts, bool with_mtp);

    int64_t num_pools() const { return static_cast<int64_t>(pools_.size()); }
    int64_t mtp_pool() const { return 2 * num_layers_; }  // valid when with_mtp
    kernels::kv_pool_view pool(int64_t block_idx);
    int64_t page_size() const { return opts_.page_size; }
    int64_t num_pages() const { return opts_.num_pages; }
    int64_t num_free_pages() const { return static_cast<int64_t>(free_.size()); }
    int64_t pages_for_tokens(int64_t num_tokens) const {
        return (num_tokens + opts_.page_size - 1) / opts_.page_size;
    }

    // Appends pages to `page_table` until it covers num_tokens; false (and no change) when
    // the pool has too few free pages.
    bool reserve(std::vector<int32_t>& page_table, int64_t num_tokens);
    void release(std::vector<int32_t>& page_table);
    // Takes specific pages out of the free list (tests: build a fragmented pool).
    std::vector<int32_t> take_pages(int64_t count);

    // -- moving a sequence's KV between workers (prefill → decode, ARCHITECTURE.md §6) ----------
    // Bytes of one cached row: row_dim values of the cache dtype, in the layout above.
    int64_t row_bytes() const;
    kernels::dtype type() const { return opts_.type; }
    // Copies rows [begin, begin + count) of pool `pool` of the sequence with `page_table` into
    // `out` (count × row_bytes(), token-major), exactly as stored. Throws model_error when a row
    // is outside the table or the pool does not exist.
    void export_rows(const std::vector<int32_t>& page_table, int64_t pool, int64_t begin,
                     int64_t count, void* out) const;
    // Writes such rows into this cache (same dtype and row layout; the table must already cover
    // begin + count: reserve() first). Throws model_error like export_rows.
    void import_rows(const std::vector<int32_t>& page_table, int64_t pool, int64_t begin,
                     int64_t count, const void* rows);

private:
    kv_cache_options opts_;
    int64_t num_layers_;
    int64_t row_dim_;
    std::vector<std::vector<uint8_t>> pools_;
    std::vector<int32_t> free_;  // a stack; pages are handed out from the back
};

}  // namespace longcat::model
