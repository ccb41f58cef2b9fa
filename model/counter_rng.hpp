// SplitMix64, the finaliser both counter-based generators of model/ use: the sampler's draw
// keyed by (seed, token index) and mkmodel's weights keyed by (seed, tensor, element).
#pragma once

#include <cstdint>

namespace longcat::model {

constexpr uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

}  // namespace longcat::model
