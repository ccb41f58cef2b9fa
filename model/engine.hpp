// engine: LongCat-Flash in one process — weights, one KV cache, batched forward steps over
// sequences, and a generation loop.  The reference the cluster is checked against.
// Receives: sequences with new tokens.  Owns: the KV pages of every live sequence.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "model/forward.hpp"
#include "model/kv_cache.hpp"
#include "model/sampling.hpp"
#include "model/weights.hpp"

namespace longcat::model {

struct engine_options {
    kv_cache_options kv;
    int64_t prefill_chunk = 512;  // tokens per prefill forward
    int num_threads = 0;          // compute threads; 0 = default_compute_threads() (cores ÷ services)
};

// A request's state in the engine: its tokens so far and its KV pages.
struct sequence {
    std::vector<int32_t> tokens;      // every token whose KV is cached, in order
    std::vector<int32_t> page_table;  // pages of this sequence, same ids in every pool
    int64_t num_cached() const { return static_cast<int64_t>(tokens.size()); }
};

class engine {
public:
    engine(std::shared_ptr<const model_weights> weights, const engine_options& opts);

    const model_config& config() const { return weights_->config; }
    const model_weights& weights() const { return *weights_; }
    kv_cache& cache() { return kv_; }

    // One forward over a batch: sequence i appends new_tokens[i] (≥ 1) to its cache.  Logits are
    // for each sequence's last new token, or for every new token with opts.all_logits.
    // Throws model_error (and changes nothing) when the pages do not fit or a token id lies
    // outside the vocabulary.
    forward_output step(const std::vector<sequence*>& seqs,
                        const std::vector<std::vector<int32_t>>& new_tokens,
                        const forward_options& opts = {});

    // The MTP draft over the rows of the last step: see forward_mtp.
    std::vector<float> step_mtp(const std::vector<sequence*>& seqs,
                                const std::vector<std::vector<int32_t>>& next_tokens,
                                const std::vector<int64_t>& first_pos, const float* h_final);

    void release(sequence& seq) { kv_.release(seq.page_table); }

    // Prefill (in chunks) then decode until max_tokens or EOS; on_token is called with each
    // generated id as it is produced.  Returns the generated ids (EOS included if produced).
    std::vector<int32_t> generate(const std::vector<int32_t>& prompt, int64_t max_tokens,
                                  const sampling_params& sampling,
                                  const std::function<void(int32_t)>& on_token = {});

private:
    std::shared_ptr<const model_weights> weights_;
    engine_options opts_;
    kv_cache kv_;
};

}  // namespace longcat::model
