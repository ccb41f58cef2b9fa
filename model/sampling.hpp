// Token sampling: greedy, temperature, top-k, top-p.  The random draw comes from a
// counter-based generator keyed by (seed, request-local token index), so a request gives the
// same tokens whatever batch it runs in and however it is scheduled.
#pragma once

#include <cstdint>

namespace longcat::model {

struct sampling_params {
    float temperature = 1.0f;  // 0 = greedy
    float top_p = 1.0f;        // (0, 1]
    int64_t top_k = 0;         // 0 = off
    uint64_t seed = 0;
};

// Validates the params; throws model_error naming the field.
void validate_sampling_params(const sampling_params& p);

// A uniform double in [0, 1) from (seed, counter): SplitMix64 finalisers over both.
double counter_uniform(uint64_t seed, uint64_t counter);

// Samples one token id from logits[vocab]; token_index is the request-local index of the token
// being generated (0 for the first generated token).
int32_t sample_token(const float* logits, int64_t vocab, const sampling_params& p,
                     uint64_t token_index);

// Index of the largest logit (the lowest index among ties).
int32_t argmax(const float* logits, int64_t vocab);

}  // namespace longcat::model
