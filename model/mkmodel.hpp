// mkmodel: seeded random LongCat-Flash checkpoints of any shape, in the HF layout
// (config.json, model.safetensors, tokenizer.json, tokenizer_config.json), for tests, the
// demo and benchmarks.  Includes zero experts, the MTP layer with its own embedding, and
// optionally block-FP8 weights (128×128 scales, partial edge blocks, some Linears kept bf16).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "kernels/api/dtype.hpp"
#include "model/config.hpp"

namespace longcat::model {

struct mkmodel_preset {
    std::string name;
    std::string tokenizer;  // an embedded tokenizer: "gpt2" | "llama3"
    model_config config;
};

// tiny (tests), tiny-b (tests; differs from tiny in every dimension), demo (the main job),
// bench (CPU performance: dense path ≥ 4× a 260 MiB last-level cache).
const std::vector<mkmodel_preset>& mkmodel_presets();
const mkmodel_preset& find_mkmodel_preset(const std::string& name);  // throws model_error

enum class checkpoint_dtype { fp32, bf16, fp8 };
checkpoint_dtype parse_checkpoint_dtype(const std::string& s);  // "fp32" | "bf16" | "fp8"

struct mkmodel_options {
    std::string preset = "tiny";
    std::filesystem::path out_dir;
    uint64_t seed = 0;
    checkpoint_dtype dtype = checkpoint_dtype::fp32;
};

// Writes the checkpoint; returns the number of parameters written.
int64_t make_model(const mkmodel_options& opts);

// The embedded tokenizer.json of a shipped tokenizer ("gpt2", "llama3"); empty if unknown.
std::string_view embedded_tokenizer_json(std::string_view name);

}  // namespace longcat::model
