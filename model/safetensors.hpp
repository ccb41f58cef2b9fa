// Safetensors checkpoints: a validated mmap reader, a writer, model directories (one file or
// shards behind model.safetensors.index.json), and loading tensors into compute form.
// Compute form: F32 → f32 and BF16 → bf16 as zero-copy views into the mapping; F16 → f32 copy;
// F8_E4M3 + `<name>_scale_inv` (128×128 blocks) → bf16 copy. Every error is a model_error naming
// the file and the tensor (or the JSON field) at fault; nothing is read before it is validated.
//
// File layout (little-endian):
//   [u64 header_len | header JSON, space-padded to a multiple of 8 | data section]
//   header: {"__metadata__": {str: str}, "<name>": {"dtype", "shape", "data_offsets": [b, e]}}
//   data_offsets are relative to the start of the data section; tensor_info holds absolute ones.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/api/dtype.hpp"

namespace longcat::model {

// Edge of one FP8 scale block: `X_scale_inv` is [ceil(rows/128), ceil(cols/128)].
constexpr int64_t kFp8BlockSize = 128;

// safetensors dtype strings: F32, BF16, F16, F8_E4M3, I32, I64, U8.
std::string_view safetensors_dtype_name(kernels::dtype type);
std::optional<kernels::dtype> parse_safetensors_dtype(std::string_view name);

// Product of the dims (1 for a scalar). Throws model_error on a negative dim or on overflow.
int64_t shape_num_elements(std::span<const int64_t> shape);
std::string shape_to_string(std::span<const int64_t> shape);  // "[200, 300]"

struct byte_range {
    uint64_t begin = 0;
    uint64_t end = 0;  // one past the last byte
    uint64_t size() const { return end - begin; }
    bool operator==(const byte_range&) const = default;
};

// Where one tensor lives. `begin`/`end` are absolute byte offsets into `file`.
struct tensor_info {
    std::string name;
    kernels::dtype type = kernels::dtype::f32;
    std::vector<int64_t> shape;
    std::filesystem::path file;
    uint64_t begin = 0;
    uint64_t end = 0;

    uint64_t num_bytes() const { return end - begin; }
    int64_t num_elements() const { return shape_num_elements(shape); }
    bool operator==(const tensor_info&) const = default;
};

// A read-only mapping of a whole file. Views into it hold the shared_ptr, so the mapping lives as
// long as any tensor loaded from it. An empty file maps to (nullptr, 0).
class mapped_file {
  public:
    static std::shared_ptr<const mapped_file> open(const std::filesystem::path& path);
    ~mapped_file();
    mapped_file(const mapped_file&) = delete;
    mapped_file& operator=(const mapped_file&) = delete;

    const uint8_t* data() const { return data_; }
    uint64_t size() const { return size_; }
    const std::filesystem::path& path() const { return path_; }

  private:
    mapped_file(std::filesystem::path path, const uint8_t* data, uint64_t size)
        : path_(std::move(path)), data_(data), size_(size) {}

    std::filesystem::path path_;
    const uint8_t* data_ = nullptr;
    uint64_t size_ = 0;
};

// One .safetensors file, mapped and validated at open: the header length lies within the file,
// the header is a JSON object, every dtype is known, every data range lies within the data
// section, ranges do not overlap, and shape × dtype size equals each range's length.
class safetensors_file {
  public:
    static safetensors_file open(const std::filesystem::path& path);

    const std::filesystem::path& path() const { return mapping_->path(); }
    const std::vector<tensor_info>& tensors() const { return tensors_; }  // sorted by name
    const tensor_info* find(std::string_view name) const;                 // nullptr if absent
    const std::map<std::string, std::string>& metadata() const { return metadata_; }
    // The bytes of a tensor of this file (validated at open, so always in range).
    std::span<const uint8_t> bytes(const tensor_info& info) const;
    const std::shared_ptr<const mapped_file>& mapping() const { return mapping_; }

  private:
    std::shared_ptr<const mapped_file> mapping_;
    std::vector<tensor_info> tensors_;
    std::map<std::string, std::string> metadata_;
};

// -- writing ------------------------------------------------------------------------------------

struct tensor_spec {
    std::string name;
    kernels::dtype type = kernels::dtype::f32;
    std::vector<int64_t> shape;
};

struct tensor_data {
    std::string name;
    kernels::dtype type = kernels::dtype::f32;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;  // row-major, little-endian; size = elements × dtype size
};

// Where write_safetensors would place these tensors in `file` (absolute offsets, sorted by name),
// without writing anything. Throws on duplicate or empty names.
std::vector<tensor_info> safetensors_file_layout(
    const std::filesystem::path& file, std::vector<tensor_spec> specs,
    const std::map<std::string, std::string>& metadata = {});

// Writes a safetensors file as HF does: tensors sorted by name and packed back to back, header
// padded with spaces to a multiple of 8 bytes, `__metadata__` only when non-empty. Returns the
// written layout. Throws on duplicate names or a byte size that does not match the shape.
std::vector<tensor_info> write_safetensors(const std::filesystem::path& path,
                                           std::vector<tensor_data> tensors,
                                           const std::map<std::string, std::string>& metadata = {});

// Writes model.safetensors.index.json: {"metadata": {"total_size": N}, "weight_map": {...}}.
// `weight_map`: tensor name → shard file name (relative to the index's folder).
void write_safetensors_index(const std::filesystem::path& path,
                             const std::map<std::string, std::string>& weight_map,
                             uint64_t total_size);

// -- loading ------------------------------------------------------------------------------------

// Half-open [begin, end) over rows (dim 0) and columns (dim 1, 2-D tensors only); end = -1 means
// "to the end". A 1-D tensor's rows are its elements.
struct tensor_slice {
    int64_t row_begin = 0;
    int64_t row_end = -1;
    int64_t col_begin = 0;
    int64_t col_end = -1;

    static tensor_slice rows(int64_t begin, int64_t end) { return {begin, end, 0, -1}; }
    static tensor_slice cols(int64_t begin, int64_t end) { return {0, -1, begin, end}; }
    bool operator==(const tensor_slice&) const = default;
};

// A tensor in compute form (f32 or bf16; integer dtypes as stored), row-major and contiguous.
// Either a view into the file mapping or an owned buffer; it keeps whichever alive.
class loaded_tensor {
  public:
    loaded_tensor() = default;
    static loaded_tensor view(kernels::dtype type, std::vector<int64_t> shape, const uint8_t* data,
                              std::shared_ptr<const void> keep_alive);
    static loaded_tensor owned(kernels::dtype type, std::vector<int64_t> shape,
                               std::vector<uint8_t> bytes);

    kernels::dtype type() const { return type_; }
    const std::vector<int64_t>& shape() const { return shape_; }
    int64_t num_elements() const { return shape_num_elements(shape_); }
    uint64_t num_bytes() const { return num_bytes_; }
    const void* data() const { return data_; }
    template <class T>
    const T* data_as() const {
        return static_cast<const T*>(static_cast<const void*>(data_));
    }
    std::span<const uint8_t> bytes() const { return {data_, static_cast<size_t>(num_bytes_)}; }
    bool is_view() const { return is_view_; }  // true: zero-copy, points into the mapping

  private:
    kernels::dtype type_ = kernels::dtype::f32;
    std::vector<int64_t> shape_;
    const uint8_t* data_ = nullptr;
    uint64_t num_bytes_ = 0;
    bool is_view_ = false;
    std::shared_ptr<const void> storage_;
};

// A model's tensors: a directory holding model.safetensors.index.json (shards) or
// model.safetensors, or a single .safetensors file. Cheap to copy (shared state).
class checkpoint {
  public:
    // Opens and validates every file. For an index: every referenced shard exists (as a plain
    // relative name inside the folder) and holds the tensors mapped to it.
    static checkpoint open(const std::filesystem::path& path);

    const std::filesystem::path& path() const;
    std::vector<std::string> names() const;  // sorted
    bool has(std::string_view name) const;
    // Throws model_error naming the tensor and the checkpoint when absent.
    const tensor_info& info(std::string_view name) const;
    std::vector<tensor_info> tensors() const;  // sorted by name
    std::span<const uint8_t> raw_bytes(std::string_view name) const;
    const std::vector<std::filesystem::path>& files() const;

    // Loads `name` in compute form. `expected_shape` is the full stored shape (mismatch → error
    // naming the tensor, both shapes and the file); the result has the sliced shape.
    // Zero-copy when F32/BF16, unsliced or row-sliced, and aligned; column slices copy.
    // F8_E4M3 needs `<name>_scale_inv` (fp32 [ceil(rows/128), ceil(cols/128)]):
    // W = fp8 · scale_inv blockwise in fp32, rounded to bf16. Only the sliced rows/columns and
    // their scale blocks are read. A non-F8 tensor with a scale companion is an error.
    loaded_tensor load(std::string_view name, const std::vector<int64_t>& expected_shape,
                       const std::optional<tensor_slice>& slice = std::nullopt) const;
    // Any float dtype → f32 (F8 is dequantised with its scale, without bf16 rounding).
    std::vector<float> load_f32(std::string_view name,
                                const std::vector<int64_t>& expected_shape) const;

  private:
    struct state;
    std::shared_ptr<const state> state_;
};

}  // namespace longcat::model
