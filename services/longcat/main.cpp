// The `longcat` command line: wiring only; the logic lives in model/.
//   longcat mkmodel --preset NAME --out DIR [--seed S] [--dtype fp32|bf16|fp8]
//   longcat generate --model DIR --prompt TEXT [--chat] [--system TEXT] [--max-tokens N]
//                    [--temperature T] [--top-p P] [--top-k K] [--seed S] [--threads N]
//                    [--kv-dtype fp32|bf16]
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "kernels/api/threads.hpp"
#include "model/chat_template.hpp"
#include "model/engine.hpp"
#include "model/error.hpp"
#include "model/mkmodel.hpp"
#include "model/tokenizer.hpp"

namespace {

using namespace longcat::model;

struct usage_error : std::runtime_error {
    using std::runtime_error::runtime_error;
};

constexpr const char* kUsage =
    "usage:\n"
    "  longcat mkmodel --preset tiny|tiny-b|demo|bench --out DIR [--seed S] [--dtype fp32|bf16|fp8]\n"
    "  longcat generate --model DIR --prompt TEXT [--chat] [--system TEXT] [--max-tokens N]\n"
    "                   [--temperature T] [--top-p P] [--top-k K] [--seed S] [--threads N]\n"
    "                   [--kv-dtype fp32|bf16]\n";

// --name value pairs and --flag switches; every option must be known to the command.
class args {
public:
    args(int argc, char** argv, int first, const std::vector<std::string>& options,
         const std::vector<std::string>& flags) {
        for (int i = first; i < argc; ++i) {
            const std::string a = argv[i];
            if (std::find(flags.begin(), flags.end(), a) != flags.end()) {
                values_[a] = "1";
            } else if (std::find(options.begin(), options.end(), a) != options.end()) {
                if (i + 1 >= argc) throw usage_error(a + " needs a value");
                values_[a] = argv[++i];
            } else {
                throw usage_error("unknown argument " + a);
            }
        }
    }
    bool has(const std::string& k) const { return values_.count(k) != 0; }
    std::string get(const std::string& k, const std::string& def = "") const {
        auto it = values_.find(k);
        return it == values_.end() ? def : it->second;
    }
    std::string required(const std::string& k) const {
        if (!has(k)) throw usage_error(k + " is required");
        return get(k);
    }
    int64_t get_int(const std::string& k, int64_t def) const {
        if (!has(k)) return def;
        try {
            size_t pos = 0;
            const long long v = std::stoll(get(k), &pos);
            if (pos != get(k).size()) throw std::invalid_argument("trailing");
            return v;
        } catch (const std::exception&) {
            throw usage_error(k + " must be an integer, got \"" + get(k) + "\"");
        }
    }
    double get_double(const std::string& k, double def) const {
        if (!has(k)) return def;
        try {
            size_t pos = 0;
            const double v = std::stod(get(k), &pos);
            if (pos != get(k).size()) throw std::invalid_argument("trailing");
            return v;
        } catch (const std::exception&) {
            throw usage_error(k + " must be a number, got \"" + get(k) + "\"");
        }
    }

private:
    std::map<std::string, std::string> values_;
};

int cmd_mkmodel(int argc, char** argv) {
    const args a(argc, argv, 2, {"--preset", "--out", "--seed", "--dtype"}, {});
    mkmodel_options o;
    o.preset = a.get("--preset", "tiny");
    o.out_dir = a.required("--out");
    o.seed = static_cast<uint64_t>(a.get_int("--seed", 0));
    o.dtype = parse_checkpoint_dtype(a.get("--dtype", "fp32"));
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t n = make_model(o);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "mkmodel: wrote %s (preset %s, %.2fM parameters) in %.1f s\n",
                 o.out_dir.string().c_str(), o.preset.c_str(), static_cast<double>(n) / 1e6, s);
    return 0;
}

int cmd_generate(int argc, char** argv) {
    const args a(argc, argv, 2,
                 {"--model", "--prompt", "--system", "--max-tokens", "--temperature", "--top-p",
                  "--top-k", "--seed", "--threads", "--kv-dtype"},
                 {"--chat"});
    const std::filesystem::path dir = a.required("--model");
    const std::string prompt = a.required("--prompt");
    sampling_params sp;
    sp.temperature = static_cast<float>(a.get_double("--temperature", 0.0));
    sp.top_p = static_cast<float>(a.get_double("--top-p", 1.0));
    sp.top_k = a.get_int("--top-k", 0);
    sp.seed = static_cast<uint64_t>(a.get_int("--seed", 0));
    validate_sampling_params(sp);
    const int64_t max_tokens = a.get_int("--max-tokens", 64);
    if (max_tokens < 1) throw usage_error("--max-tokens must be >= 1");
    engine_options eo;
    eo.num_threads = static_cast<int>(a.get_int("--threads", 0));
    const std::string kv_dtype = a.get("--kv-dtype", "fp32");
    if (kv_dtype == "bf16")
        eo.kv.type = longcat::kernels::dtype::bf16;
    else if (kv_dtype != "fp32")
        throw usage_error("--kv-dtype must be fp32 or bf16");

    const tokenizer tok = tokenizer::load_dir(dir);
    auto t0 = std::chrono::steady_clock::now();
    auto weights = std::make_shared<model_weights>(load_model_weights(
        dir, {}, [&](uint64_t done, uint64_t total) {
            std::fprintf(stderr, "\rloading weights: %5.1f%% of %.1f MiB",
                         total ? 100.0 * static_cast<double>(done) / static_cast<double>(total) : 100.0,
                         static_cast<double>(total) / (1 << 20));
        }));
    std::fprintf(stderr, "\rloading weights: done in %.2f s%20s\n",
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), "");
    const int64_t max_pos = weights->config.max_position_embeddings;
    eo.kv.num_pages = (max_pos + eo.kv.page_size - 1) / eo.kv.page_size;
    engine eng(weights, eo);

    std::vector<int32_t> ids;
    if (a.has("--chat")) {
        log_jinja_template_ignored(tok);
        std::vector<chat_message> msgs;
        if (a.has("--system")) msgs.push_back({"system", a.get("--system")});
        msgs.push_back({"user", prompt});
        ids = tok.encode(render_chat(msgs, true, weights->config.model_type), true);
    } else {
        if (a.has("--system")) throw usage_error("--system needs --chat");
        ids = tok.encode(prompt, true);
    }
    std::fprintf(stderr, "prompt: %zu tokens\n", ids.size());
    stream_decoder dec(tok, /*skip_special_tokens=*/true);
    t0 = std::chrono::steady_clock::now();
    const auto out = eng.generate(ids, max_tokens, sp, [&](int32_t id) {
        if (id == weights->config.eos_token_id) return;
        const std::string piece = dec.push(id);
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
    });
    const std::string tail = dec.flush();
    std::fwrite(tail.data(), 1, tail.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "generated %zu tokens in %.2f s (%.1f tokens/s)%s\n", out.size(), s,
                 static_cast<double>(out.size()) / s,
                 (!out.empty() && out.back() == weights->config.eos_token_id) ? ", stopped at EOS" : "");
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    longcat::kernels::ensure_passive_openmp(argv);
    if (argc < 2) {
        std::fputs(kUsage, stderr);
        return 2;
    }
    const std::string cmd = argv[1];
    try {
        if (cmd == "mkmodel") return cmd_mkmodel(argc, argv);
        if (cmd == "generate") return cmd_generate(argc, argv);
        if (cmd == "-h" || cmd == "--help" || cmd == "help") {
            std::fputs(kUsage, stdout);
            return 0;
        }
        throw usage_error("unknown command \"" + cmd + "\"");
    } catch (const usage_error& e) {
        std::fprintf(stderr, "longcat %s: %s\n%s", cmd.c_str(), e.what(), kUsage);
        return 2;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "longcat %s: error: %s\n", cmd.c_str(), e.what());
        return 1;
    }
}
