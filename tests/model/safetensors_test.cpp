#include "model/safetensors.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "kernels/api/dtype.hpp"
#include "model/error.hpp"
#include "tests/support/expect_error.hpp"

namespace longcat::model {
namespace {

using kernels::dtype;

class safetensors_test : public ::testing::Test {
  protected:
    void SetUp() override {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        std::random_device rd;
        dir_ = std::filesystem::temp_directory_path() /
               (std::string("longcat_st_") + info->name() + "_" + std::to_string(rd()));
        std::filesystem::create_directories(dir_);
    }
    void TearDown() override {
        std::error_code ec;
        std::filesystem::remove_all(dir_, ec);
    }
    std::filesystem::path dir_;
};

template <class T>
std::vector<uint8_t> to_bytes(const std::vector<T>& values) {
    std::vector<uint8_t> bytes(values.size() * sizeof(T));
    std::memcpy(bytes.data(), values.data(), bytes.size());
    return bytes;
}

// A file with a hand-written header (no padding) followed by `data_size` zero bytes.
void write_raw(const std::filesystem::path& path, const std::string& header, size_t data_size,
               uint64_t header_len_override = 0) {
    std::ofstream out(path, std::ios::binary);
    uint64_t len = header_len_override != 0 ? header_len_override : header.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>((len >> (8 * i)) & 0xff));
    out << header;
    out << std::string(data_size, '\0');
}

template <class Fn>
void expect_error(Fn fn, const std::vector<std::string>& needles) {
    longcat::testing::expect_model_error(fn, needles);
}

// -- independent references -----------------------------------------------------------------------

// e4m3fn decode from the definition: bias 7, subnormals at exponent 0, 0x7f/0xff NaN.
float ref_f8_decode(uint8_t code) {
    const int sign = code >> 7;
    const int exp = (code >> 3) & 0xf;
    const int man = code & 7;
    if (exp == 15 && man == 7) return NAN;
    double value =
        exp == 0 ? man / 8.0 * std::pow(2.0, -6) : (1 + man / 8.0) * std::pow(2.0, exp - 7);
    return static_cast<float>(sign ? -value : value);
}

// bf16 round-to-nearest-even, written out on the bit pattern.
uint16_t ref_bf16(float f) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    const uint32_t upper = bits >> 16;
    const uint32_t lower = bits & 0xffff;
    if (lower > 0x8000 || (lower == 0x8000 && (upper & 1))) return static_cast<uint16_t>(upper + 1);
    return static_cast<uint16_t>(upper);
}

TEST(f8_e4m3, encode_round_trips_every_code) {
    for (int code = 0; code < 256; ++code) {
        if ((code & 0x7f) == 0x7f) continue;  // NaN
        const float value = ref_f8_decode(static_cast<uint8_t>(code));
        EXPECT_EQ(kernels::f32_to_f8_e4m3(value), code) << "code " << code << " value " << value;
        EXPECT_EQ(kernels::f8_e4m3_to_f32(static_cast<uint8_t>(code)), value);
    }
}

TEST(f8_e4m3, rounds_to_nearest_even_and_saturates) {
    // Midpoints between neighbours go to the even mantissa.
    for (int code = 0; code < 0x7e; ++code) {
        const float lo = ref_f8_decode(static_cast<uint8_t>(code));
        const float hi = ref_f8_decode(static_cast<uint8_t>(code + 1));
        const float mid = (lo + hi) / 2;
        const int even = (code % 2 == 0) ? code : code + 1;
        EXPECT_EQ(kernels::f32_to_f8_e4m3(mid), even) << "between " << lo << " and " << hi;
        EXPECT_EQ(kernels::f32_to_f8_e4m3(-mid), even | 0x80);
        EXPECT_EQ(kernels::f32_to_f8_e4m3(std::nextafter(mid, hi)), code + 1);
        EXPECT_EQ(kernels::f32_to_f8_e4m3(std::nextafter(mid, lo)), code);
    }
    EXPECT_EQ(kernels::f32_to_f8_e4m3(448.0f), 0x7e);
    EXPECT_EQ(kernels::f32_to_f8_e4m3(460.0f), 0x7e);
    EXPECT_EQ(kernels::f32_to_f8_e4m3(1e6f), 0x7e);
    EXPECT_EQ(kernels::f32_to_f8_e4m3(-1e6f), 0xfe);
    EXPECT_EQ(kernels::f32_to_f8_e4m3(INFINITY), 0x7e);
    EXPECT_EQ(kernels::f32_to_f8_e4m3(-INFINITY), 0xfe);
    EXPECT_EQ(kernels::f32_to_f8_e4m3(NAN), 0x7f);
    EXPECT_EQ(kernels::f32_to_f8_e4m3(0.0f), 0x00);
    EXPECT_EQ(kernels::f32_to_f8_e4m3(-0.0f), 0x80);
    EXPECT_EQ(kernels::f32_to_f8_e4m3(1e-9f), 0x00);  // below half the smallest subnormal
}

// -- writer / reader ------------------------------------------------------------------------------

TEST_F(safetensors_test, round_trip_every_dtype) {
    std::mt19937 rng(7);
    std::vector<tensor_data> tensors;
    const std::vector<std::pair<dtype, std::vector<int64_t>>> kinds = {
        {dtype::f32, {3, 5}},     {dtype::bf16, {7}},    {dtype::f16, {2, 3, 4}},
        {dtype::f8_e4m3, {5, 3}}, {dtype::i32, {4}},     {dtype::i64, {1, 3}},
        {dtype::u8, {9}},         {dtype::bf16, {0, 4}}, {dtype::f32, {}}};
    int index = 0;
    for (const auto& [type, shape] : kinds) {
        tensor_data t;
        t.name = "t" + std::to_string(9 - index++) + "." + std::string(kernels::dtype_name(type));
        t.type = type;
        t.shape = shape;
        int64_t elems = 1;
        for (int64_t d : shape) elems *= d;
        t.bytes.resize(static_cast<size_t>(elems) * kernels::dtype_size(type));
        for (uint8_t& b : t.bytes) b = static_cast<uint8_t>(rng());
        tensors.push_back(t);
    }
    const auto path = dir_ / "all.safetensors";
    const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "x y"}};
    const auto written = write_safetensors(path, tensors, metadata);

    // Header: 8-byte length, a multiple of 8, padded with spaces.
    std::ifstream in(path, std::ios::binary);
    uint8_t len_bytes[8];
    in.read(reinterpret_cast<char*>(len_bytes), 8);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
    EXPECT_EQ(header_len % 8, 0u);
    std::string header(header_len, '\0');
    in.read(header.data(), static_cast<std::streamsize>(header_len));
    EXPECT_EQ(header.find("{\"__metadata__\""), 0u) << header;
    const size_t close = header.rfind('}');
    EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos);

    const safetensors_file file = safetensors_file::open(path);
    EXPECT_EQ(file.metadata(), metadata);
    ASSERT_EQ(file.tensors().size(), tensors.size());
    EXPECT_EQ(file.tensors(), written);
    std::vector<tensor_spec> specs;
    for (const auto& t : tensors) specs.push_back({t.name, t.type, t.shape});
    EXPECT_EQ(safetensors_file_layout(path, specs, metadata), written);
    for (size_t i = 1; i < file.tensors().size(); ++i) {
        EXPECT_LT(file.tensors()[i - 1].name, file.tensors()[i].name);
        EXPECT_EQ(file.tensors()[i - 1].end, file.tensors()[i].begin);  // packed in name order
    }
    for (const tensor_data& t : tensors) {
        const tensor_info* info = file.find(t.name);
        ASSERT_NE(info, nullptr) << t.name;
        EXPECT_EQ(info->type, t.type);
        EXPECT_EQ(info->shape, t.shape);
        const auto bytes = file.bytes(*info);
        EXPECT_TRUE(std::equal(bytes.begin(), bytes.end(), t.bytes.begin(), t.bytes.end()))
            << t.name;
    }
    EXPECT_EQ(file.find("absent"), nullptr);
}

TEST_F(safetensors_test, compute_form_views_and_copies) {
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> dist(-2.0f, 2.0f);
    const int64_t rows = 6, cols = 10;
    std::vector<float> f32(rows * cols);
    std::vector<uint16_t> bf16(rows * cols);
    std::vector<uint16_t> f16 = {0x3c00, 0xc000, 0x0001, 0x7bff, 0x8000, 0x3555};  // 1,-2,...
    for (auto& v : f32) v = dist(rng);
    for (auto& v : bf16) v = kernels::f32_to_bf16(dist(rng));
    write_safetensors(dir_ / "model.safetensors",
                      {{"a.f32", dtype::f32, {rows, cols}, to_bytes(f32)},
                       {"b.bf16", dtype::bf16, {rows, cols}, to_bytes(bf16)},
                       {"c.f16", dtype::f16, {2, 3}, to_bytes(f16)},
                       {"d.odd", dtype::u8, {3}, {1, 2, 3}},
                       {"e.bf16", dtype::bf16, {3}, to_bytes(std::vector<uint16_t>{1, 2, 3})}});

    loaded_tensor whole, rows_view, cols_copy;
    {
        const checkpoint ckpt = checkpoint::open(dir_);  // a folder with model.safetensors
        EXPECT_EQ(ckpt.names().size(), 5u);
        EXPECT_TRUE(ckpt.has("b.bf16"));
        EXPECT_FALSE(ckpt.has("b"));
        whole = ckpt.load("b.bf16", {rows, cols});
        EXPECT_TRUE(whole.is_view());
        EXPECT_EQ(whole.type(), dtype::bf16);
        EXPECT_EQ(whole.data(), ckpt.raw_bytes("b.bf16").data());  // zero-copy
        rows_view = ckpt.load("b.bf16", {rows, cols}, tensor_slice::rows(2, 5));
        EXPECT_TRUE(rows_view.is_view());
        EXPECT_EQ(rows_view.shape(), (std::vector<int64_t>{3, cols}));
        cols_copy = ckpt.load("a.f32", {rows, cols}, tensor_slice{1, 4, 3, 7});
        EXPECT_FALSE(cols_copy.is_view());
        EXPECT_EQ(cols_copy.shape(), (std::vector<int64_t>{3, 4}));

        const loaded_tensor f32_view = ckpt.load("a.f32", {rows, cols});
        EXPECT_TRUE(f32_view.is_view());
        EXPECT_EQ(f32_view.type(), dtype::f32);
        EXPECT_EQ(std::memcmp(f32_view.data(), f32.data(), f32.size() * 4), 0);

        const loaded_tensor half = ckpt.load("c.f16", {2, 3});
        EXPECT_EQ(half.type(), dtype::f32);
        EXPECT_FALSE(half.is_view());
        for (size_t i = 0; i < f16.size(); ++i) {
            EXPECT_EQ(half.data_as<float>()[i], kernels::f16_to_f32(f16[i]));
        }
        const std::vector<float> half_col = [&] {
            const loaded_tensor t = ckpt.load("c.f16", {2, 3}, tensor_slice::cols(1, 2));
            return std::vector<float>(t.data_as<float>(), t.data_as<float>() + 2);
        }();
        EXPECT_EQ(half_col,
                  (std::vector<float>{kernels::f16_to_f32(f16[1]), kernels::f16_to_f32(f16[4])}));

        // load_f32 from every float dtype.
        EXPECT_EQ(ckpt.load_f32("a.f32", {rows, cols}), f32);
        const auto from_bf16 = ckpt.load_f32("b.bf16", {rows, cols});
        for (size_t i = 0; i < bf16.size(); ++i) {
            EXPECT_EQ(from_bf16[i], kernels::bf16_to_f32(bf16[i]));
        }
        EXPECT_EQ(ckpt.load_f32("c.f16", {2, 3})[1], -2.0f);

        // A bf16 tensor at an odd offset (after the 3-byte u8 one) is copied, not misaligned.
        const loaded_tensor odd = ckpt.load("e.bf16", {3});
        EXPECT_EQ(reinterpret_cast<uintptr_t>(odd.data()) % 2, 0u);
        uint16_t second;
        std::memcpy(&second, static_cast<const uint8_t*>(odd.data()) + 2, 2);
        EXPECT_EQ(second, 2);
        const loaded_tensor one_elem = ckpt.load("e.bf16", {3}, tensor_slice::rows(1, 2));
        EXPECT_EQ(one_elem.shape(), (std::vector<int64_t>{1}));
    }
    // The checkpoint is gone; the tensors keep their storage.
    EXPECT_EQ(std::memcmp(whole.data(), bf16.data(), bf16.size() * 2), 0);
    EXPECT_EQ(std::memcmp(rows_view.data(), bf16.data() + 2 * cols, 3 * cols * 2), 0);
    for (int64_t r = 0; r < 3; ++r) {
        for (int64_t c = 0; c < 4; ++c) {
            EXPECT_EQ(cols_copy.data_as<float>()[r * 4 + c], f32[(r + 1) * cols + c + 3]);
        }
    }
}

// -- FP8 ------------------------------------------------------------------------------------------

TEST_F(safetensors_test, fp8_dequantisation_matches_scalar_reference) {
    const int64_t rows = 200, cols = 300;  // partial 128-blocks on both edges
    const int64_t block_rows = 2, block_cols = 3;
    std::mt19937 rng(3);
    std::normal_distribution<float> dist(0.0f, 0.05f);
    std::vector<float> weight(rows * cols);
    for (auto& v : weight) v = dist(rng);
    // Per-block amax / 448 scales, as the FP8 release's quantiser does.
    std::vector<float> scale(block_rows * block_cols, 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
            float& s = scale[(r / 128) * block_cols + c / 128];
            s = std::max(s, std::fabs(weight[r * cols + c]) / 448.0f);
        }
    }
    std::vector<uint8_t> q(rows * cols);
    for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
            q[r * cols + c] = kernels::f32_to_f8_e4m3(weight[r * cols + c] /
                                                      scale[(r / 128) * block_cols + c / 128]);
        }
    }
    std::vector<uint16_t> plain(4 * 6);
    for (auto& v : plain) v = kernels::f32_to_bf16(dist(rng));
    write_safetensors(
        dir_ / "fp8.safetensors",
        {{"layer.proj.weight", dtype::f8_e4m3, {rows, cols}, q},
         {"layer.proj.weight_scale_inv", dtype::f32, {block_rows, block_cols}, to_bytes(scale)},
         {"layer.plain.weight", dtype::bf16, {4, 6}, to_bytes(plain)}});
    const checkpoint ckpt = checkpoint::open(dir_ / "fp8.safetensors");

    auto reference = [&](int64_t r, int64_t c) {
        return ref_bf16(ref_f8_decode(q[r * cols + c]) * scale[(r / 128) * block_cols + c / 128]);
    };
    auto check = [&](const tensor_slice& slice) {
        const loaded_tensor t = ckpt.load("layer.proj.weight", {rows, cols}, slice);
        const int64_t r1 = slice.row_end == -1 ? rows : slice.row_end;
        const int64_t c1 = slice.col_end == -1 ? cols : slice.col_end;
        ASSERT_EQ(t.type(), dtype::bf16);
        ASSERT_EQ(t.shape(), (std::vector<int64_t>{r1 - slice.row_begin, c1 - slice.col_begin}));
        const uint16_t* data = t.data_as<uint16_t>();
        int64_t mismatches = 0;
        for (int64_t r = slice.row_begin; r < r1; ++r) {
            for (int64_t c = slice.col_begin; c < c1; ++c) {
                const int64_t idx =
                    (r - slice.row_begin) * (c1 - slice.col_begin) + (c - slice.col_begin);
                mismatches += data[idx] != reference(r, c);
            }
        }
        EXPECT_EQ(mismatches, 0);
    };
    check(tensor_slice{});
    check(tensor_slice::rows(50, 180));
    check(tensor_slice::cols(100, 250));
    check(tensor_slice{127, 129, 127, 257});

    // The quantisation round trip stays close to the original weights.
    const std::vector<float> f32 = ckpt.load_f32("layer.proj.weight", {rows, cols});
    for (int64_t i = 0; i < rows * cols; ++i) {
        const float s = scale[(i / cols / 128) * block_cols + (i % cols) / 128];
        EXPECT_EQ(f32[i], ref_f8_decode(q[i]) * s);
        EXPECT_NEAR(f32[i], weight[i], std::fabs(weight[i]) / 8 + s * 0.002f);
    }
    // A Linear without a scale is plain bf16.
    const loaded_tensor plain_t = ckpt.load("layer.plain.weight", {4, 6});
    EXPECT_TRUE(plain_t.is_view());
    EXPECT_EQ(std::memcmp(plain_t.data(), plain.data(), plain.size() * 2), 0);
}

// -- sharded checkpoints --------------------------------------------------------------------------

TEST_F(safetensors_test, sharded_checkpoint_through_index) {
    const std::vector<float> a = {1, 2, 3, 4};
    const std::vector<uint16_t> b = {kernels::f32_to_bf16(5), kernels::f32_to_bf16(6)};
    write_safetensors(dir_ / "model-00001-of-00002.safetensors",
                      {{"x.a", dtype::f32, {2, 2}, to_bytes(a)}, {"stray", dtype::u8, {1}, {9}}});
    write_safetensors(dir_ / "model-00002-of-00002.safetensors",
                      {{"y.b", dtype::bf16, {2}, to_bytes(b)}});
    write_safetensors_index(
        dir_ / "model.safetensors.index.json",
        {{"x.a", "model-00001-of-00002.safetensors"}, {"y.b", "model-00002-of-00002.safetensors"}},
        20);
    const checkpoint ckpt = checkpoint::open(dir_);
    EXPECT_EQ(ckpt.names(), (std::vector<std::string>{"x.a", "y.b"}));  // the weight_map's
    EXPECT_EQ(ckpt.files().size(), 2u);
    EXPECT_EQ(ckpt.info("y.b").file.filename(), "model-00002-of-00002.safetensors");
    EXPECT_EQ(ckpt.info("y.b").num_bytes(), 4u);
    EXPECT_EQ(ckpt.load_f32("x.a", {2, 2}), a);
    EXPECT_EQ(ckpt.load_f32("y.b", {2}), (std::vector<float>{5, 6}));
}

// -- bad input ------------------------------------------------------------------------------------

TEST_F(safetensors_test, error_header_length_beyond_eof) {
    const auto path = dir_ / "trunc.safetensors";
    write_raw(path, "{}", 0, 4096);
    expect_error([&] { safetensors_file::open(path); },
                 {path.string(), "header length 4096", "truncated"});
    const auto tiny = dir_ / "tiny.safetensors";
    std::ofstream(tiny, std::ios::binary) << "abc";
    expect_error([&] { safetensors_file::open(tiny); }, {tiny.string(), "truncated"});
    const auto empty = dir_ / "empty.safetensors";
    std::ofstream(empty, std::ios::binary).close();
    expect_error([&] { safetensors_file::open(empty); }, {empty.string(), "truncated"});
}

TEST_F(safetensors_test, error_data_beyond_eof) {
    const auto path = dir_ / "cut.safetensors";
    write_safetensors(path, {{"first", dtype::f32, {4}, std::vector<uint8_t>(16)},
                             {"second", dtype::f32, {8}, std::vector<uint8_t>(32)}});
    std::filesystem::resize_file(path, std::filesystem::file_size(path) - 5);
    expect_error([&] { checkpoint::open(path); }, {path.string(), "`second`", "truncated"});
}

TEST_F(safetensors_test, error_malformed_header_json) {
    const auto path = dir_ / "bad.safetensors";
    write_raw(path, "{\"w\": {\"dtype\": \"F32\", \"shape\": [1], ", 4);
    expect_error([&] { safetensors_file::open(path); }, {path.string(), "malformed"});
    const auto not_object = dir_ / "array.safetensors";
    write_raw(not_object, "[1, 2]", 0);
    expect_error([&] { safetensors_file::open(not_object); }, {not_object.string(), "object"});
    const auto bad_meta = dir_ / "meta.safetensors";
    write_raw(bad_meta, "{\"__metadata__\": {\"n\": 1}}", 0);
    expect_error([&] { safetensors_file::open(bad_meta); }, {bad_meta.string(), "__metadata__"});
    const auto bad_shape = dir_ / "shape.safetensors";
    write_raw(bad_shape, R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4);
    expect_error([&] { safetensors_file::open(bad_shape); }, {bad_shape.string(), "`w`", "shape"});
    const auto no_offsets = dir_ / "offsets.safetensors";
    write_raw(no_offsets, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4]}})", 4);
    expect_error([&] { safetensors_file::open(no_offsets); },
                 {no_offsets.string(), "`w`", "data_offsets"});
}

TEST_F(safetensors_test, error_shape_byte_size_mismatch) {
    const auto path = dir_ / "size.safetensors";
    write_raw(path, R"({"w.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})",
              24);
    expect_error([&] { safetensors_file::open(path); },
                 {path.string(), "`w.weight`", "[2, 3]", "24", "20"});
    expect_error(
        [&] {
            write_safetensors(dir_ / "w.safetensors",
                              {{"w", dtype::bf16, {3}, std::vector<uint8_t>(5)}});
        },
        {"w.safetensors", "`w`", "5 bytes"});
    expect_error(
        [&] {
            write_safetensors(dir_ / "dup.safetensors",
                              {{"w", dtype::u8, {1}, {0}}, {"w", dtype::u8, {1}, {0}}});
        },
        {"dup.safetensors", "duplicate", "`w`"});
}

TEST_F(safetensors_test, error_overlapping_tensors) {
    const auto path = dir_ / "overlap.safetensors";
    write_raw(path,
              R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},)"
              R"( "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
              12);
    expect_error([&] { safetensors_file::open(path); }, {path.string(), "`a`", "`b`", "overlap"});
}

TEST_F(safetensors_test, error_unknown_dtype) {
    const auto path = dir_ / "dtype.safetensors";
    write_raw(path, R"({"odd.weight": {"dtype": "F8_E5M2", "shape": [4], "data_offsets": [0, 4]}})",
              4);
    expect_error([&] { safetensors_file::open(path); }, {path.string(), "`odd.weight`", "F8_E5M2"});
}

TEST_F(safetensors_test, error_missing_tensor) {
    write_safetensors(dir_ / "model.safetensors", {{"present", dtype::u8, {1}, {1}}});
    const checkpoint ckpt = checkpoint::open(dir_);
    expect_error([&] { ckpt.info("absent.weight"); }, {dir_.string(), "`absent.weight`"});
    expect_error([&] { ckpt.load("absent.weight", {1}); }, {dir_.string(), "`absent.weight`"});
    const auto empty_dir = dir_ / "nothing";
    std::filesystem::create_directories(empty_dir);
    expect_error([&] { checkpoint::open(empty_dir); }, {empty_dir.string(), "model.safetensors"});
    expect_error([&] { checkpoint::open(dir_ / "no_such"); }, {"no_such"});
}

TEST_F(safetensors_test, error_shape_mismatch_vs_expected) {
    const auto path = dir_ / "model.safetensors";
    write_safetensors(path, {{"w.weight", dtype::f32, {2, 3}, std::vector<uint8_t>(24)}});
    const checkpoint ckpt = checkpoint::open(dir_);
    expect_error(
        [&] {
            ckpt.load("w.weight", {3, 2});
        },
        {path.string(), "`w.weight`", "[2, 3]", "[3, 2]"});
    expect_error([&] { ckpt.load_f32("w.weight", {6}); },
                 {path.string(), "`w.weight`", "[2, 3]", "[6]"});
    expect_error(
        [&] {
            ckpt.load("w.weight", {2, 3}, tensor_slice::rows(1, 3));
        },
        {path.string(), "`w.weight`", "row slice"});
    expect_error(
        [&] {
            ckpt.load("w.weight", {2, 3}, tensor_slice::cols(-1, 2));
        },
        {path.string(), "`w.weight`", "column slice"});
}

TEST_F(safetensors_test, error_f8_without_scale) {
    const auto path = dir_ / "model.safetensors";
    write_safetensors(path, {{"q.weight", dtype::f8_e4m3, {4, 4}, std::vector<uint8_t>(16)},
                             {"s.weight", dtype::f8_e4m3, {4, 4}, std::vector<uint8_t>(16)},
                             {"s.weight_scale_inv", dtype::f32, {2, 1}, std::vector<uint8_t>(8)},
                             {"b.weight", dtype::bf16, {2}, std::vector<uint8_t>(4)},
                             {"b.weight_scale_inv", dtype::f32, {1, 1}, std::vector<uint8_t>(4)},
                             {"i.weight", dtype::i32, {1}, std::vector<uint8_t>(4)}});
    const checkpoint ckpt = checkpoint::open(dir_);
    expect_error(
        [&] {
            ckpt.load("q.weight", {4, 4});
        },
        {path.string(), "`q.weight`", "`q.weight_scale_inv`"});
    expect_error([&] { ckpt.load_f32("q.weight", {4, 4}); }, {path.string(), "`q.weight`"});
    expect_error(
        [&] {
            ckpt.load("s.weight", {4, 4});
        },
        {path.string(), "`s.weight_scale_inv`", "[2, 1]", "[1, 1]"});
    expect_error([&] { ckpt.load("b.weight", {2}); },
                 {path.string(), "`b.weight`", "`b.weight_scale_inv`"});
    expect_error([&] { ckpt.load_f32("i.weight", {1}); }, {path.string(), "`i.weight`", "I32"});
}

TEST_F(safetensors_test, error_index_points_at_missing_shard) {
    write_safetensors(dir_ / "model-00001-of-00002.safetensors", {{"a", dtype::u8, {1}, {1}}});
    const auto index = dir_ / "model.safetensors.index.json";
    write_safetensors_index(
        index,
        {{"a", "model-00001-of-00002.safetensors"}, {"b", "model-00002-of-00002.safetensors"}}, 2);
    expect_error([&] { checkpoint::open(dir_); },
                 {index.string(), "model-00002-of-00002.safetensors", "`b`"});
    // A shard that exists but lacks the tensor mapped to it.
    write_safetensors_index(
        index,
        {{"a", "model-00001-of-00002.safetensors"}, {"c", "model-00001-of-00002.safetensors"}}, 2);
    expect_error([&] { checkpoint::open(dir_); },
                 {index.string(), "`c`", "model-00001-of-00002.safetensors"});
    // A shard outside the folder.
    write_safetensors_index(index, {{"a", "../elsewhere.safetensors"}}, 1);
    expect_error([&] { checkpoint::open(dir_); }, {index.string(), "../elsewhere.safetensors"});
    std::ofstream(index) << "{\"weight_map\": [";
    expect_error([&] { checkpoint::open(dir_); }, {index.string(), "malformed"});
    std::ofstream(index) << "{\"metadata\": {}}";
    expect_error([&] { checkpoint::open(dir_); }, {index.string(), "weight_map"});
}

}  // namespace
}  // namespace longcat::model
