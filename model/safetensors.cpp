#include "model/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model/error.hpp"

namespace longcat::model {

namespace {

using json = nlohmann::json;
using kernels::dtype;

[[noreturn]] void fail(const std::filesystem::path& file, const std::string& what) {
    throw model_error(file.string() + ": " + what);
}

std::string ticked(std::string_view name) { return "`" + std::string(name) + "`"; }

std::string dtype_label(dtype type) { return std::string(safetensors_dtype_name(type)); }

uint64_t read_le64(const uint8_t* p) {
    uint64_t value = 0;
    for (int i = 7; i >= 0; --i) value = (value << 8) | p[i];
    return value;
}

// Elements × dtype size, or nullopt on overflow or a negative dim.
std::optional<uint64_t> checked_byte_size(std::span<const int64_t> shape, dtype type) {
    uint64_t total = kernels::dtype_size(type);
    for (int64_t dim : shape) {
        if (dim < 0) return std::nullopt;
        if (__builtin_mul_overflow(total, static_cast<uint64_t>(dim), &total)) return std::nullopt;
    }
    return total;
}

float read_float(const uint8_t* p, dtype type) {
    switch (type) {
        case dtype::f32: {
            float v;
            std::memcpy(&v, p, 4);
            return v;
        }
        case dtype::bf16: {
            uint16_t v;
            std::memcpy(&v, p, 2);
            return kernels::bf16_to_f32(v);
        }
        case dtype::f16: {
            uint16_t v;
            std::memcpy(&v, p, 2);
            return kernels::f16_to_f32(v);
        }
        case dtype::f8_e4m3:
            return kernels::f8_e4m3_to_f32(*p);
        case dtype::i32:
        case dtype::i64:
        case dtype::u8:
            break;
    }
    return 0.0f;
}

bool is_float_type(dtype type) {
    switch (type) {
        case dtype::f32:
        case dtype::bf16:
        case dtype::f16:
        case dtype::f8_e4m3:
            return true;
        case dtype::i32:
        case dtype::i64:
        case dtype::u8:
            return false;
    }
    return false;
}

const std::array<float, 256>& f8_table() {
    static const std::array<float, 256> table = [] {
        std::array<float, 256> t{};
        for (int code = 0; code < 256; ++code) {
            t[code] = kernels::f8_e4m3_to_f32(static_cast<uint8_t>(code));
        }
        return t;
    }();
    return table;
}

// The header text write_safetensors emits for `sorted` specs, and each tensor's data range
// relative to the data section. Padded with spaces to a multiple of 8 bytes.
std::string build_header(const std::filesystem::path& file, const std::vector<tensor_spec>& sorted,
                         const std::map<std::string, std::string>& metadata,
                         std::vector<byte_range>* ranges) {
    std::string header = "{";
    bool first = true;
    try {
        if (!metadata.empty()) {
            header += "\"__metadata__\":" + json(metadata).dump();
            first = false;
        }
        uint64_t offset = 0;
        ranges->clear();
        ranges->reserve(sorted.size());
        for (const tensor_spec& spec : sorted) {
            const auto num_bytes = checked_byte_size(spec.shape, spec.type);
            if (!num_bytes) {
                fail(file, "tensor " + ticked(spec.name) + ": invalid shape " +
                               shape_to_string(spec.shape));
            }
            if (!first) header += ',';
            first = false;
            header += json(spec.name).dump();
            header += ":{\"dtype\":\"" + dtype_label(spec.type) + "\",\"shape\":[";
            for (size_t i = 0; i < spec.shape.size(); ++i) {
                if (i > 0) header += ',';
                header += std::to_string(spec.shape[i]);
            }
            header += "],\"data_offsets\":[" + std::to_string(offset) + "," +
                      std::to_string(offset + *num_bytes) + "]}";
            ranges->push_back({offset, offset + *num_bytes});
            offset += *num_bytes;
        }
    } catch (const json::exception& e) {
        fail(file, std::string("cannot encode header: ") + e.what());
    }
    header += '}';
    header.append((8 - header.size() % 8) % 8, ' ');
    return header;
}

// Sorts by name and rejects empty, reserved and duplicate names.
void sort_and_check_names(const std::filesystem::path& file, std::vector<tensor_spec>& specs) {
    std::sort(specs.begin(), specs.end(),
              [](const tensor_spec& a, const tensor_spec& b) { return a.name < b.name; });
    for (size_t i = 0; i < specs.size(); ++i) {
        if (specs[i].name.empty() || specs[i].name == "__metadata__") {
            fail(file, "invalid tensor name " + ticked(specs[i].name));
        }
        if (i > 0 && specs[i].name == specs[i - 1].name) {
            fail(file, "duplicate tensor " + ticked(specs[i].name));
        }
    }
}

std::vector<tensor_info> layout_of(const std::filesystem::path& file,
                                   const std::vector<tensor_spec>& sorted,
                                   const std::string& header,
                                   const std::vector<byte_range>& ranges) {
    std::vector<tensor_info> infos;
    infos.reserve(sorted.size());
    const uint64_t data_start = 8 + header.size();
    for (size_t i = 0; i < sorted.size(); ++i) {
        infos.push_back({sorted[i].name, sorted[i].type, sorted[i].shape, file,
                         data_start + ranges[i].begin, data_start + ranges[i].end});
    }
    return infos;
}

// Parses one header entry into a tensor_info; offsets are made absolute.
tensor_info parse_entry(const std::filesystem::path& file, const std::string& name,
                        const json& entry, uint64_t data_start, uint64_t data_size) {
    const std::string what = "tensor " + ticked(name);
    if (!entry.is_object()) fail(file, what + ": header entry must be an object");
    auto dtype_it = entry.find("dtype");
    if (dtype_it == entry.end() || !dtype_it->is_string()) {
        fail(file, what + ": missing or non-string `dtype`");
    }
    const std::string dtype_text = dtype_it->get<std::string>();
    const auto type = parse_safetensors_dtype(dtype_text);
    if (!type) fail(file, what + " has unsupported dtype " + ticked(dtype_text));

    auto as_u64 = [&](const json& v, const char* field) -> uint64_t {
        if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0)) {
            fail(file, what + ": `" + field + "` must hold non-negative integers, got " + v.dump());
        }
        return v.get<uint64_t>();
    };
    auto shape_it = entry.find("shape");
    if (shape_it == entry.end() || !shape_it->is_array()) {
        fail(file, what + ": missing or non-array `shape`");
    }
    std::vector<int64_t> shape;
    for (const json& dim : *shape_it) {
        const uint64_t value = as_u64(dim, "shape");
        if (value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
            fail(file, what + ": shape dimension out of range: " + dim.dump());
        }
        shape.push_back(static_cast<int64_t>(value));
    }
    auto offsets_it = entry.find("data_offsets");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2) {
        fail(file, what + ": `data_offsets` must be an array [begin, end]");
    }
    const uint64_t begin = as_u64((*offsets_it)[0], "data_offsets");
    const uint64_t end = as_u64((*offsets_it)[1], "data_offsets");
    const std::string offsets_text =
        "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) + "]";
    if (begin > end) fail(file, what + ": " + offsets_text + " are reversed");
    if (end > data_size) {
        fail(file, what + ": " + offsets_text + " extend beyond the end of the file (the data " +
                       "section holds " + std::to_string(data_size) + " bytes; truncated?)");
    }
    const auto num_bytes = checked_byte_size(shape, *type);
    if (!num_bytes || *num_bytes != end - begin) {
        fail(file, what + ": shape " + shape_to_string(shape) + " of " + dtype_text + " needs " +
                       (num_bytes ? std::to_string(*num_bytes) : std::string("too many")) +
                       " bytes but " + offsets_text + " span " + std::to_string(end - begin));
    }
    return {name, *type, std::move(shape), file, data_start + begin, data_start + end};
}

// Resolved slice bounds over a tensor viewed as [rows, row_elems] (2-D: row_elems = cols).
struct slice_bounds {
    int64_t rows = 1;
    int64_t row_elems = 1;
    int64_t row_begin = 0;
    int64_t row_end = 1;
    bool col_sliced = false;
    int64_t col_begin = 0;
    int64_t col_end = 0;
    std::vector<int64_t> out_shape;
};

slice_bounds resolve_slice(const tensor_info& info, const std::optional<tensor_slice>& slice) {
    slice_bounds b;
    const auto& shape = info.shape;
    const std::string what = "tensor " + ticked(info.name) + " " + shape_to_string(shape);
    b.out_shape = shape;
    if (shape.empty()) {
        if (slice && *slice != tensor_slice{}) fail(info.file, what + ": cannot slice a scalar");
        return b;
    }
    b.rows = shape[0];
    b.row_elems = shape_num_elements(std::span<const int64_t>(shape).subspan(1));
    b.row_begin = 0;
    b.row_end = b.rows;
    b.col_begin = 0;
    b.col_end = shape.size() == 2 ? shape[1] : b.row_elems;
    if (!slice) return b;
    b.row_begin = slice->row_begin;
    b.row_end = slice->row_end == -1 ? b.rows : slice->row_end;
    if (b.row_begin < 0 || b.row_begin > b.row_end || b.row_end > b.rows) {
        fail(info.file, what + ": row slice [" + std::to_string(slice->row_begin) + ", " +
                            std::to_string(slice->row_end) + ") out of range");
    }
    b.out_shape[0] = b.row_end - b.row_begin;
    if (slice->col_begin != 0 || slice->col_end != -1) {
        if (shape.size() != 2) fail(info.file, what + ": column slices need a 2-D tensor");
        const int64_t cols = shape[1];
        b.col_begin = slice->col_begin;
        b.col_end = slice->col_end == -1 ? cols : slice->col_end;
        if (b.col_begin < 0 || b.col_begin > b.col_end || b.col_end > cols) {
            fail(info.file, what + ": column slice [" + std::to_string(slice->col_begin) + ", " +
                                std::to_string(slice->col_end) + ") out of range");
        }
        b.col_sliced = !(b.col_begin == 0 && b.col_end == cols);
        b.out_shape[1] = b.col_end - b.col_begin;
    }
    return b;
}

}  // namespace

// -- dtype names and shapes -----------------------------------------------------------------------

std::string_view safetensors_dtype_name(dtype type) {
    switch (type) {
        case dtype::f32:
            return "F32";
        case dtype::bf16:
            return "BF16";
        case dtype::f16:
            return "F16";
        case dtype::f8_e4m3:
            return "F8_E4M3";
        case dtype::i32:
            return "I32";
        case dtype::i64:
            return "I64";
        case dtype::u8:
            return "U8";
    }
    return "?";
}

std::optional<dtype> parse_safetensors_dtype(std::string_view name) {
    for (dtype type :
         {dtype::f32, dtype::bf16, dtype::f16, dtype::f8_e4m3, dtype::i32, dtype::i64, dtype::u8}) {
        if (safetensors_dtype_name(type) == name) return type;
    }
    return std::nullopt;
}

int64_t shape_num_elements(std::span<const int64_t> shape) {
    int64_t total = 1;
    for (int64_t dim : shape) {
        if (dim < 0 || __builtin_mul_overflow(total, dim, &total)) {
            throw model_error("invalid tensor shape " + shape_to_string(shape));
        }
    }
    return total;
}

std::string shape_to_string(std::span<const int64_t> shape) {
    std::string out = "[";
    for (size_t i = 0; i < shape.size(); ++i) {
        if (i > 0) out += ", ";
        out += std::to_string(shape[i]);
    }
    return out + "]";
}

// -- mapped_file ----------------------------------------------------------------------------------

std::shared_ptr<const mapped_file> mapped_file::open(const std::filesystem::path& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        fail(path, "not a readable regular file");
    }
    const auto size = static_cast<uint64_t>(st.st_size);
    void* data = nullptr;
    if (size > 0) {
        data = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (data == MAP_FAILED) {
            const int err = errno;
            ::close(fd);
            fail(path, std::string("cannot mmap: ") + std::strerror(err));
        }
    }
    ::close(fd);
    return std::shared_ptr<const mapped_file>(
        new mapped_file(path, static_cast<const uint8_t*>(data), size));
}

mapped_file::~mapped_file() {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

// -- safetensors_file -----------------------------------------------------------------------------

safetensors_file safetensors_file::open(const std::filesystem::path& path) {
    safetensors_file file;
    file.mapping_ = mapped_file::open(path);
    const uint8_t* data = file.mapping_->data();
    const uint64_t file_size = file.mapping_->size();
    if (file_size < 8) {
        fail(path, "truncated: " + std::to_string(file_size) +
                       " bytes, shorter than the 8-byte header length");
    }
    const uint64_t header_len = read_le64(data);
    if (header_len > file_size - 8) {
        fail(path, "truncated: header length " + std::to_string(header_len) +
                       " extends beyond the end of the file (" + std::to_string(file_size) +
                       " bytes)");
    }
    json header;
    try {
        header = json::parse(data + 8, data + 8 + header_len);
    } catch (const json::exception& e) {
        fail(path, std::string("malformed safetensors header JSON: ") + e.what());
    }
    if (!header.is_object()) fail(path, "safetensors header must be a JSON object");
    const uint64_t data_start = 8 + header_len;
    const uint64_t data_size = file_size - data_start;
    for (const auto& [key, value] : header.items()) {
        if (key == "__metadata__") {
            if (!value.is_object()) fail(path, "`__metadata__` must be an object");
            for (const auto& [meta_key, meta_value] : value.items()) {
                if (!meta_value.is_string()) {
                    fail(path, "`__metadata__." + meta_key + "` must be a string");
                }
                file.metadata_[meta_key] = meta_value.get<std::string>();
            }
            continue;
        }
        file.tensors_.push_back(parse_entry(path, key, value, data_start, data_size));
    }
    // No two tensors may share bytes.
    std::vector<const tensor_info*> by_offset;
    for (const tensor_info& info : file.tensors_) {
        if (info.num_bytes() > 0) by_offset.push_back(&info);
    }
    std::sort(by_offset.begin(), by_offset.end(),
              [](const tensor_info* a, const tensor_info* b) { return a->begin < b->begin; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
        if (by_offset[i]->begin < by_offset[i - 1]->end) {
            fail(path, "tensors " + ticked(by_offset[i - 1]->name) + " and " +
                           ticked(by_offset[i]->name) + " overlap");
        }
    }
    std::sort(file.tensors_.begin(), file.tensors_.end(),
              [](const tensor_info& a, const tensor_info& b) { return a.name < b.name; });
    return file;
}

const tensor_info* safetensors_file::find(std::string_view name) const {
    auto it = std::lower_bound(tensors_.begin(), tensors_.end(), name,
                               [](const tensor_info& a, std::string_view n) { return a.name < n; });
    return it != tensors_.end() && it->name == name ? &*it : nullptr;
}

std::span<const uint8_t> safetensors_file::bytes(const tensor_info& info) const {
    if (info.end < info.begin || info.end > mapping_->size()) {
        fail(path(), "tensor " + ticked(info.name) + ": byte range outside the file");
    }
    return {mapping_->data() + info.begin, static_cast<size_t>(info.num_bytes())};
}

// -- writing --------------------------------------------------------------------------------------

std::vector<tensor_info> safetensors_file_layout(
    const std::filesystem::path& file, std::vector<tensor_spec> specs,
    const std::map<std::string, std::string>& metadata) {
    sort_and_check_names(file, specs);
    std::vector<byte_range> ranges;
    const std::string header = build_header(file, specs, metadata, &ranges);
    return layout_of(file, specs, header, ranges);
}

std::vector<tensor_info> write_safetensors(const std::filesystem::path& path,
                                           std::vector<tensor_data> tensors,
                                           const std::map<std::string, std::string>& metadata) {
    std::sort(tensors.begin(), tensors.end(),
              [](const tensor_data& a, const tensor_data& b) { return a.name < b.name; });
    std::vector<tensor_spec> specs;
    specs.reserve(tensors.size());
    for (const tensor_data& t : tensors) {
        const auto expected = checked_byte_size(t.shape, t.type);
        if (!expected || *expected != t.bytes.size()) {
            fail(path, "tensor " + ticked(t.name) + ": " + std::to_string(t.bytes.size()) +
                           " bytes given, shape " + shape_to_string(t.shape) + " of " +
                           dtype_label(t.type) + " needs " +
                           (expected ? std::to_string(*expected) : std::string("too many")));
        }
        specs.push_back({t.name, t.type, t.shape});
    }
    sort_and_check_names(path, specs);
    std::vector<byte_range> ranges;
    const std::string header = build_header(path, specs, metadata, &ranges);

    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) fail(path, "cannot create file");
    std::array<char, 8> len{};
    uint64_t header_len = header.size();
    for (char& byte : len) {
        byte = static_cast<char>(header_len & 0xff);
        header_len >>= 8;
    }
    out.write(len.data(), len.size());
    out.write(header.data(), static_cast<std::streamsize>(header.size()));
    for (const tensor_data& t : tensors) {
        out.write(reinterpret_cast<const char*>(t.bytes.data()),
                  static_cast<std::streamsize>(t.bytes.size()));
    }
    out.close();
    if (!out) fail(path, "write failed");
    return layout_of(path, specs, header, ranges);
}

void write_safetensors_index(const std::filesystem::path& path,
                             const std::map<std::string, std::string>& weight_map,
                             uint64_t total_size) {
    nlohmann::ordered_json index;
    index["metadata"] = {{"total_size", total_size}};
    index["weight_map"] = weight_map;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) fail(path, "cannot create file");
    out << index.dump(2) << "\n";
    out.close();
    if (!out) fail(path, "write failed");
}

// -- loaded_tensor --------------------------------------------------------------------------------

loaded_tensor loaded_tensor::view(dtype type, std::vector<int64_t> shape, const uint8_t* data,
                                  std::shared_ptr<const void> keep_alive) {
    loaded_tensor t;
    t.type_ = type;
    t.num_bytes_ = static_cast<uint64_t>(shape_num_elements(shape)) * kernels::dtype_size(type);
    t.shape_ = std::move(shape);
    t.data_ = data;
    t.is_view_ = true;
    t.storage_ = std::move(keep_alive);
    return t;
}

loaded_tensor loaded_tensor::owned(dtype type, std::vector<int64_t> shape,
                                   std::vector<uint8_t> bytes) {
    const uint64_t expected =
        static_cast<uint64_t>(shape_num_elements(shape)) * kernels::dtype_size(type);
    if (expected != bytes.size()) {
        throw model_error("loaded_tensor: " + std::to_string(bytes.size()) +
                          " bytes do not match shape " + shape_to_string(shape));
    }
    auto storage = std::make_shared<std::vector<uint8_t>>(std::move(bytes));
    loaded_tensor t;
    t.type_ = type;
    t.shape_ = std::move(shape);
    t.num_bytes_ = expected;
    t.data_ = storage->data();
    t.is_view_ = false;
    t.storage_ = std::move(storage);
    return t;
}

// -- checkpoint -----------------------------------------------------------------------------------

struct checkpoint::state {
    struct entry {
        size_t shard = 0;
        tensor_info info;
    };
    std::filesystem::path path;
    std::vector<std::filesystem::path> files;
    std::vector<safetensors_file> shards;
    std::map<std::string, entry, std::less<>> index;

    const entry& at(std::string_view name) const {
        auto it = index.find(name);
        if (it == index.end()) fail(path, "tensor " + ticked(name) + " not found in checkpoint");
        return it->second;
    }
    std::span<const uint8_t> bytes(const entry& e) const { return shards[e.shard].bytes(e.info); }
};

namespace {

// A shard name from an index must stay inside the model folder.
bool is_safe_relative(const std::filesystem::path& p) {
    if (p.empty() || p.is_absolute() || p.has_root_name()) return false;
    for (const auto& part : p) {
        if (part == "..") return false;
    }
    return true;
}

std::string read_text_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(path, "cannot open");
    std::ostringstream text;
    text << in.rdbuf();
    if (in.bad()) fail(path, "cannot read");
    return text.str();
}

}  // namespace

checkpoint checkpoint::open(const std::filesystem::path& path) {
    auto st = std::make_shared<state>();
    st->path = path;
    std::error_code ec;
    auto add_whole_file = [&](const std::filesystem::path& file) {
        st->shards.push_back(safetensors_file::open(file));
        st->files.push_back(file);
        for (const tensor_info& info : st->shards.back().tensors()) {
            st->index.emplace(info.name, state::entry{0, info});
        }
    };
    if (std::filesystem::is_regular_file(path, ec)) {
        add_whole_file(path);
    } else if (std::filesystem::is_directory(path, ec)) {
        const auto index_path = path / "model.safetensors.index.json";
        const auto single_path = path / "model.safetensors";
        if (std::filesystem::exists(index_path, ec)) {
            json index;
            try {
                index = json::parse(read_text_file(index_path));
            } catch (const json::exception& e) {
                fail(index_path, std::string("malformed index JSON: ") + e.what());
            }
            if (!index.is_object() || !index.contains("weight_map") ||
                !index["weight_map"].is_object()) {
                fail(index_path, "`weight_map` is missing or not an object");
            }
            // shard name → tensors mapped to it, in first-seen order of shards
            std::map<std::string, std::vector<std::string>> by_shard;
            for (const auto& [name, shard] : index["weight_map"].items()) {
                if (!shard.is_string()) {
                    fail(index_path, "`weight_map." + name + "` must be a string");
                }
                const std::string shard_name = shard.get<std::string>();
                if (!is_safe_relative(shard_name)) {
                    fail(index_path, "`weight_map." + name + "`: shard " + ticked(shard_name) +
                                         " is not a relative path inside the model folder");
                }
                by_shard[shard_name].push_back(name);
            }
            for (const auto& [shard_name, names] : by_shard) {
                const auto shard_path = path / shard_name;
                if (!std::filesystem::is_regular_file(shard_path, ec)) {
                    fail(index_path, "shard " + ticked(shard_name) + " (holding tensor " +
                                         ticked(names.front()) +
                                         ") does not exist: " + shard_path.string());
                }
                const size_t shard_idx = st->shards.size();
                st->shards.push_back(safetensors_file::open(shard_path));
                st->files.push_back(shard_path);
                const safetensors_file& shard_file = st->shards.back();
                for (const std::string& name : names) {
                    const tensor_info* info = shard_file.find(name);
                    if (info == nullptr) {
                        fail(index_path, "tensor " + ticked(name) + " is mapped to shard " +
                                             ticked(shard_name) + ", which does not hold it");
                    }
                    st->index.emplace(name, state::entry{shard_idx, *info});
                }
            }
        } else if (std::filesystem::exists(single_path, ec)) {
            add_whole_file(single_path);
        } else {
            fail(path, "neither model.safetensors.index.json nor model.safetensors found");
        }
    } else {
        fail(path, "no such checkpoint file or directory");
    }
    checkpoint ckpt;
    ckpt.state_ = std::move(st);
    return ckpt;
}

const std::filesystem::path& checkpoint::path() const { return state_->path; }

const std::vector<std::filesystem::path>& checkpoint::files() const { return state_->files; }

std::vector<std::string> checkpoint::names() const {
    std::vector<std::string> names;
    names.reserve(state_->index.size());
    for (const auto& [name, entry] : state_->index) names.push_back(name);
    return names;
}

bool checkpoint::has(std::string_view name) const { return state_->index.contains(name); }

const tensor_info& checkpoint::info(std::string_view name) const { return state_->at(name).info; }

std::vector<tensor_info> checkpoint::tensors() const {
    std::vector<tensor_info> out;
    out.reserve(state_->index.size());
    for (const auto& [name, entry] : state_->index) out.push_back(entry.info);
    return out;
}

std::span<const uint8_t> checkpoint::raw_bytes(std::string_view name) const {
    return state_->bytes(state_->at(name));
}

namespace {

void check_shape(const tensor_info& info, const std::vector<int64_t>& expected) {
    if (info.shape != expected) {
        fail(info.file, "tensor " + ticked(info.name) + " has shape " +
                            shape_to_string(info.shape) + ", expected " +
                            shape_to_string(expected));
    }
}

// The scale companion of an F8 tensor, validated against the weight's shape.
const tensor_info& fp8_scale_info(const checkpoint& ckpt, const tensor_info& weight) {
    const std::string scale_name = weight.name + "_scale_inv";
    const std::string what = "FP8 tensor " + ticked(weight.name);
    if (weight.shape.size() != 2) {
        fail(weight.file, what + " must be 2-D, got " + shape_to_string(weight.shape));
    }
    if (!ckpt.has(scale_name)) {
        fail(weight.file, what + " has no scale tensor " + ticked(scale_name));
    }
    const tensor_info& scale = ckpt.info(scale_name);
    if (!is_float_type(scale.type) || scale.type == dtype::f8_e4m3) {
        fail(scale.file, "scale tensor " + ticked(scale_name) + " has dtype " +
                             dtype_label(scale.type) + ", expected F32");
    }
    const std::vector<int64_t> expected = {(weight.shape[0] + kFp8BlockSize - 1) / kFp8BlockSize,
                                           (weight.shape[1] + kFp8BlockSize - 1) / kFp8BlockSize};
    if (scale.shape != expected) {
        fail(scale.file, "scale tensor " + ticked(scale_name) + " has shape " +
                             shape_to_string(scale.shape) + ", expected " +
                             shape_to_string(expected) + " for " + what + " " +
                             shape_to_string(weight.shape));
    }
    return scale;
}

void reject_stray_scale(const checkpoint& ckpt, const tensor_info& info) {
    const std::string scale_name = info.name + "_scale_inv";
    if (ckpt.has(scale_name)) {
        fail(info.file, "tensor " + ticked(info.name) + " is " + dtype_label(info.type) +
                            " but has a scale tensor " + ticked(scale_name) +
                            " (only F8_E4M3 weights are block-scaled)");
    }
}

// Dequantises rows [r0, r1) × cols [c0, c1) of an FP8 weight; `store(index, value)` writes
// one output element.
template <class Store>
void dequantize_fp8(std::span<const uint8_t> weight, int64_t cols, std::span<const uint8_t> scale,
                    dtype scale_type, int64_t scale_cols, const slice_bounds& b, Store store) {
    const auto& table = f8_table();
    const size_t scale_size = kernels::dtype_size(scale_type);
    const int64_t out_cols = b.col_end - b.col_begin;
    const int64_t num_rows = b.row_end - b.row_begin;
#pragma omp parallel for schedule(static) if (num_rows * out_cols >= (int64_t{1} << 20))
    for (int64_t r = b.row_begin; r < b.row_end; ++r) {
        const uint8_t* row = weight.data() + r * cols;
        const uint8_t* scale_row =
            scale.data() + static_cast<size_t>((r / kFp8BlockSize) * scale_cols) * scale_size;
        const int64_t out_base = (r - b.row_begin) * out_cols;
        int64_t c = b.col_begin;
        while (c < b.col_end) {
            const int64_t block = c / kFp8BlockSize;
            const int64_t block_end = std::min(b.col_end, (block + 1) * kFp8BlockSize);
            const float s = read_float(scale_row + block * scale_size, scale_type);
            for (; c < block_end; ++c) store(out_base + (c - b.col_begin), table[row[c]] * s);
        }
    }
}

}  // namespace

loaded_tensor checkpoint::load(std::string_view name, const std::vector<int64_t>& expected_shape,
                               const std::optional<tensor_slice>& slice) const {
    const state::entry& e = state_->at(name);
    const tensor_info& info = e.info;
    check_shape(info, expected_shape);
    const slice_bounds b = resolve_slice(info, slice);
    const std::span<const uint8_t> raw = state_->bytes(e);
    const int64_t out_elems = shape_num_elements(b.out_shape);

    switch (info.type) {
        case dtype::f32:
        case dtype::bf16:
        case dtype::i32:
        case dtype::i64:
        case dtype::u8: {
            reject_stray_scale(*this, info);
            const size_t esize = kernels::dtype_size(info.type);
            if (!b.col_sliced) {
                const uint64_t offset = static_cast<uint64_t>(b.row_begin * b.row_elems) * esize;
                // The mapping is page-aligned, so the file offset decides the alignment.
                if ((info.begin + offset) % esize == 0) {
                    return loaded_tensor::view(info.type, b.out_shape, raw.data() + offset,
                                               state_->shards[e.shard].mapping());
                }
                const auto first = raw.begin() + static_cast<ptrdiff_t>(offset);
                return loaded_tensor::owned(
                    info.type, b.out_shape,
                    std::vector<uint8_t>(first, first + static_cast<ptrdiff_t>(out_elems * esize)));
            }
            const int64_t out_cols = b.col_end - b.col_begin;
            std::vector<uint8_t> out(static_cast<size_t>(out_elems) * esize);
            for (int64_t r = b.row_begin; r < b.row_end; ++r) {
                std::memcpy(out.data() + (r - b.row_begin) * out_cols * esize,
                            raw.data() + (r * b.row_elems + b.col_begin) * esize,
                            static_cast<size_t>(out_cols) * esize);
            }
            return loaded_tensor::owned(info.type, b.out_shape, std::move(out));
        }
        case dtype::f16: {
            reject_stray_scale(*this, info);
            std::vector<uint8_t> out(static_cast<size_t>(out_elems) * 4);
            const int64_t out_cols = b.col_end - b.col_begin;
            for (int64_t r = b.row_begin; r < b.row_end; ++r) {
                for (int64_t c = b.col_begin; c < b.col_end; ++c) {
                    const float v = read_float(raw.data() + (r * b.row_elems + c) * 2, dtype::f16);
                    std::memcpy(out.data() + ((r - b.row_begin) * out_cols + (c - b.col_begin)) * 4,
                                &v, 4);
                }
            }
            return loaded_tensor::owned(dtype::f32, b.out_shape, std::move(out));
        }
        case dtype::f8_e4m3: {
            const tensor_info& scale = fp8_scale_info(*this, info);
            const std::span<const uint8_t> scale_raw = raw_bytes(scale.name);
            std::vector<uint8_t> out(static_cast<size_t>(out_elems) * 2);
            uint8_t* dst = out.data();
            dequantize_fp8(raw, info.shape[1], scale_raw, scale.type, scale.shape[1], b,
                           [dst](int64_t idx, float v) {
                               const kernels::bf16_t h = kernels::f32_to_bf16(v);
                               std::memcpy(dst + idx * 2, &h, 2);
                           });
            return loaded_tensor::owned(dtype::bf16, b.out_shape, std::move(out));
        }
    }
    fail(info.file, "tensor " + ticked(name) + ": unhandled dtype");
}

std::vector<float> checkpoint::load_f32(std::string_view name,
                                        const std::vector<int64_t>& expected_shape) const {
    const state::entry& e = state_->at(name);
    const tensor_info& info = e.info;
    check_shape(info, expected_shape);
    const std::span<const uint8_t> raw = state_->bytes(e);
    const int64_t num_elems = info.num_elements();
    std::vector<float> out(static_cast<size_t>(num_elems));
    switch (info.type) {
        case dtype::f32:
        case dtype::bf16:
        case dtype::f16: {
            reject_stray_scale(*this, info);
            const size_t esize = kernels::dtype_size(info.type);
            for (int64_t i = 0; i < num_elems; ++i) {
                out[i] = read_float(raw.data() + i * esize, info.type);
            }
            return out;
        }
        case dtype::f8_e4m3: {
            const tensor_info& scale = fp8_scale_info(*this, info);
            const slice_bounds b = resolve_slice(info, std::nullopt);
            float* dst = out.data();
            dequantize_fp8(raw, info.shape[1], raw_bytes(scale.name), scale.type, scale.shape[1], b,
                           [dst](int64_t idx, float v) { dst[idx] = v; });
            return out;
        }
        case dtype::i32:
        case dtype::i64:
        case dtype::u8:
            break;
    }
    fail(info.file, "tensor " + ticked(name) + " has dtype " + dtype_label(info.type) +
                        "; a float tensor is expected");
}

}  // namespace longcat::model
