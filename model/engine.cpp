#include "model/engine.hpp"

#include "kernels/api/threads.hpp"
#include "model/error.hpp"

namespace longcat::model {

engine::engine(std::shared_ptr<const model_weights> weights, const engine_options& opts)
    : weights_(std::move(weights)), opts_(opts), kv_(weights_->config, opts.kv, weights_->mtp.has_value()) {
    if (opts.prefill_chunk <= 0) throw model_error("engine: prefill_chunk must be positive");
    kernels::set_num_threads(opts.num_threads > 0 ? opts.num_threads : kernels::default_compute_threads());
}

forward_output engine::step(const std::vector<sequence*>& seqs,
                            const std::vector<std::vector<int32_t>>& new_tokens,
                            const forward_options& opts) {
    if (seqs.size() != new_tokens.size())
        throw model_error("engine: step got " + std::to_string(seqs.size()) + " sequences and " +
                          std::to_string(new_tokens.size()) + " token lists");
    for (size_t i = 0; i < seqs.size(); ++i)
        for (size_t j = 0; j < i; ++j)
            if (seqs[i] == seqs[j])
                throw model_error("engine: sequences " + std::to_string(j) + " and " +
                                  std::to_string(i) + " of the step are the same sequence");
    // Token ids first (embed would refuse them too, but after the pages below were taken).
    const int64_t vocab = config().vocab_size;
    for (const std::vector<int32_t>& tokens : new_tokens)
        for (const int32_t id : tokens)
            if (id < 0 || id >= vocab)
                throw model_error("engine: token id " + std::to_string(id) +
                                  " outside the vocabulary of " + std::to_string(vocab));
    // Reserve pages, all or nothing.
    std::vector<size_t> before(seqs.size());
    for (size_t i = 0; i < seqs.size(); ++i) {
        before[i] = seqs[i]->page_table.size();
        const int64_t want = seqs[i]->num_cached() + static_cast<int64_t>(new_tokens[i].size());
        if (new_tokens[i].empty()) throw model_error("engine: a sequence in a step has no new tokens");
        if (want > config().max_position_embeddings)
            throw model_error("engine: sequence of " + std::to_string(want) +
                              " tokens exceeds max_position_embeddings " +
                              std::to_string(config().max_position_embeddings));
        if (!kv_.reserve(seqs[i]->page_table, want)) {
            for (size_t j = 0; j <= i; ++j) {
                std::vector<int32_t> extra(seqs[j]->page_table.begin() + static_cast<int64_t>(before[j]),
                                           seqs[j]->page_table.end());
                seqs[j]->page_table.resize(before[j]);
                kv_.release(extra);
            }
            throw model_error("engine: KV cache out of pages (" + std::to_string(kv_.num_free_pages()) +
                              " free)");
        }
    }
    forward_batch batch;
    for (size_t i = 0; i < seqs.size(); ++i) {
        sequence_slice s;
        s.token_begin = batch.num_tokens();
        s.num_tokens = static_cast<int64_t>(new_tokens[i].size());
        s.first_pos = seqs[i]->num_cached();
        s.page_table = seqs[i]->page_table.data();
        for (int64_t t = 0; t < s.num_tokens; ++t) {
            batch.token_ids.push_back(new_tokens[i][t]);
            batch.positions.push_back(static_cast<int32_t>(s.first_pos + t));
        }
        batch.seqs.push_back(s);
    }
    forward_output out = forward(*weights_, batch, kv_, opts);
    for (size_t i = 0; i < seqs.size(); ++i)
        seqs[i]->tokens.insert(seqs[i]->tokens.end(), new_tokens[i].begin(), new_tokens[i].end());
    return out;
}

std::vector<float> engine::step_mtp(const std::vector<sequence*>& seqs,
                                    const std::vector<std::vector<int32_t>>& next_tokens,
                                    const std::vector<int64_t>& first_pos, const float* h_final) {
    forward_batch batch;
    for (size_t i = 0; i < seqs.size(); ++i) {
        sequence_slice s;
        s.token_begin = batch.num_tokens();
        s.num_tokens = static_cast<int64_t>(next_tokens[i].size());
        s.first_pos = first_pos[i];
        s.page_table = seqs[i]->page_table.data();
        if (s.first_pos + s.num_tokens > kv_.page_size() * static_cast<int64_t>(seqs[i]->page_table.size()))
            throw model_error("engine: MTP rows beyond the sequence's reserved pages");
        for (int64_t t = 0; t < s.num_tokens; ++t) {
            batch.token_ids.push_back(next_tokens[i][t]);
            batch.positions.push_back(static_cast<int32_t>(s.first_pos + t));
        }
        batch.seqs.push_back(s);
    }
    return forward_mtp(*weights_, batch, kv_, h_final);
}

std::vector<int32_t> engine::generate(const std::vector<int32_t>& prompt, int64_t max_tokens,
                                      const sampling_params& sampling,
                                      const std::function<void(int32_t)>& on_token) {
    validate_sampling_params(sampling);
    if (prompt.empty()) throw model_error("engine: empty prompt");
    if (max_tokens < 1)
        throw model_error("engine: max_tokens must be at least 1, got " +
                          std::to_string(max_tokens));
    sequence seq;
    std::vector<int32_t> generated;
    const int64_t V = config().vocab_size;
    try {
        forward_output out;
        for (size_t b = 0; b < prompt.size(); b += static_cast<size_t>(opts_.prefill_chunk)) {
            const size_t e = std::min(prompt.size(), b + static_cast<size_t>(opts_.prefill_chunk));
            out = step({&seq}, {std::vector<int32_t>(prompt.begin() + static_cast<int64_t>(b),
                                                     prompt.begin() + static_cast<int64_t>(e))});
        }
        while (static_cast<int64_t>(generated.size()) < max_tokens) {
            const int32_t id = sample_token(out.logits.data(), V, sampling, generated.size());
            generated.push_back(id);
            if (on_token) on_token(id);
            if (id == config().eos_token_id || static_cast<int64_t>(generated.size()) >= max_tokens)
                break;
            out = step({&seq}, {{id}});
        }
    } catch (...) {
        release(seq);
        throw;
    }
    release(seq);
    return generated;
}

}  // namespace longcat::model
