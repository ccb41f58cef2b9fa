// The `longcat` command line: wiring only; the logic lives in model/ and actors/control/.
//   longcat mkmodel --preset NAME --out DIR [--seed S] [--dtype fp32|bf16|fp8]
//   longcat generate --model DIR --prompt TEXT [--chat] [--system TEXT] [--max-tokens N]
//                    [--temperature T] [--top-p P] [--top-k K] [--seed S] [--threads N]
//                    [--kv-dtype fp32|bf16] [--ids]
//   longcat generate --cluster STATEFILE|HOST:PORT --prompt TEXT ... (through a running cluster)
//   longcat cluster up --topology FILE --model DIR [--state FILE] [--timeout-s N]
//   longcat cluster down [--state FILE] [--grace-s N]
//   longcat cluster status [--state FILE]
#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "actors/control/cluster_client.hpp"
#include "actors/control/launcher.hpp"
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
    "                   [--kv-dtype fp32|bf16] [--ids]\n"
    "  longcat generate --cluster STATEFILE|HOST:PORT [--model DIR] --prompt TEXT [--chat]\n"
    "                   [--max-tokens N] [--temperature T] [--top-p P] [--top-k K] [--seed S] [--ids]\n"
    "  longcat cluster up --topology FILE --model DIR [--state FILE] [--timeout-s N]\n"
    "  longcat cluster down [--state FILE] [--grace-s N]\n"
    "  longcat cluster status [--state FILE]\n"
    "(the default state file is .longcat-cluster/state.json)\n";

constexpr const char* kDefaultStateFile = ".longcat-cluster/state.json";

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

void print_ids(const std::vector<int32_t>& ids) {
    std::string line = "ids:";
    for (int32_t id : ids) line += " " + std::to_string(id);
    std::fprintf(stderr, "%s\n", line.c_str());
}

std::vector<int32_t> encode_prompt(const tokenizer& tok, const args& a, const std::string& model_type) {
    const std::string prompt = a.required("--prompt");
    if (a.has("--chat")) {
        log_jinja_template_ignored(tok);
        std::vector<chat_message> msgs;
        if (a.has("--system")) msgs.push_back({"system", a.get("--system")});
        msgs.push_back({"user", prompt});
        return tok.encode(render_chat(msgs, true, model_type), true);
    }
    if (a.has("--system")) throw usage_error("--system needs --chat");
    return tok.encode(prompt, true);
}

// generate --cluster: the coordinator from a state file (`longcat cluster up`) or HOST:PORT.
int cmd_generate_cluster(const args& a) {
    std::string coordinator = a.get("--cluster");
    std::string model_dir = a.get("--model");
    if (std::filesystem::is_regular_file(coordinator)) {
        auto state = longcat::control::read_cluster_state(coordinator);
        if (!state) throw std::runtime_error(state.error());
        coordinator = state->coordinator;
        if (model_dir.empty()) model_dir = state->model_dir;
    }
    if (model_dir.empty()) throw usage_error("--model is needed (the tokenizer) with --cluster HOST:PORT");
    const tokenizer tok = tokenizer::load_dir(model_dir);
    const model_config cfg = load_model_config(std::filesystem::path(model_dir) / "config.json");
    longcat::control::cluster_generate_options o;
    o.prompt = encode_prompt(tok, a, cfg.model_type);
    o.max_tokens = a.get_int("--max-tokens", 64);
    if (o.max_tokens < 1) throw usage_error("--max-tokens must be >= 1");
    o.temperature = static_cast<float>(a.get_double("--temperature", 0.0));
    o.top_p = static_cast<float>(a.get_double("--top-p", 1.0));
    o.top_k = a.get_int("--top-k", 0);
    o.seed = static_cast<uint64_t>(a.get_int("--seed", 0));
    std::fprintf(stderr, "prompt: %zu tokens, coordinator %s\n", o.prompt.size(), coordinator.c_str());
    const auto t0 = std::chrono::steady_clock::now();
    auto result = longcat::control::cluster_generate(coordinator, o);
    if (!result) throw std::runtime_error(result.error());
    stream_decoder dec(tok, /*skip_special_tokens=*/true);
    std::string text;
    for (int32_t id : result->tokens)
        if (id != cfg.eos_token_id) text += dec.push(id);
    text += dec.flush();
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    if (a.has("--ids")) print_ids(result->tokens);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "generated %zu tokens in %.2f s through the cluster (request %llu, %s)\n",
                 result->tokens.size(), s, static_cast<unsigned long long>(result->request_id),
                 result->finish_reason.c_str());
    return 0;
}

int cmd_cluster(int argc, char** argv) {
    if (argc < 3) throw usage_error("cluster needs up, down or status");
    const std::string sub = argv[2];
    if (sub == "up") {
        const args a(argc, argv, 3, {"--topology", "--model", "--state", "--timeout-s", "--bin-dir"}, {});
        longcat::control::cluster_up_options o;
        o.topology = a.required("--topology");
        o.model_dir = a.required("--model");
        o.state_file = a.get("--state", kDefaultStateFile);
        o.bin_dir = a.get("--bin-dir");
        o.ready_timeout = std::chrono::seconds(a.get_int("--timeout-s", 120));
        auto state = longcat::control::cluster_up(o);
        if (!state) {
            std::fprintf(stderr, "longcat cluster up: %s\n", state.error().c_str());
            return 1;
        }
        std::printf("%sready; state file %s\n", longcat::control::describe_cluster(*state).c_str(),
                    std::filesystem::absolute(o.state_file).c_str());
        return 0;
    }
    if (sub == "down") {
        const args a(argc, argv, 3, {"--state", "--grace-s"}, {});
        auto report = longcat::control::cluster_down(a.get("--state", kDefaultStateFile),
                                                     std::chrono::seconds(a.get_int("--grace-s", 10)));
        if (!report) {
            std::fprintf(stderr, "longcat cluster down: %s\n", report.error().c_str());
            return 1;
        }
        for (const auto& line : *report) std::printf("%s\n", line.c_str());
        return 0;
    }
    if (sub == "status") {
        const args a(argc, argv, 3, {"--state"}, {});
        auto state = longcat::control::read_cluster_state(a.get("--state", kDefaultStateFile));
        if (!state) throw std::runtime_error(state.error());
        std::printf("%s", longcat::control::describe_cluster(*state).c_str());
        auto status = longcat::control::cluster_status_of(state->coordinator, std::chrono::seconds(5));
        if (!status) throw std::runtime_error(status.error());
        std::printf("serving: %s%s (placement v%llu)\n", status->serving ? "yes" : "no",
                    status->serving ? "" : (", " + status->reason).c_str(),
                    static_cast<unsigned long long>(status->placement_version));
        for (const auto& m : status->members) std::printf("  %s\n", m.c_str());
        return status->serving ? 0 : 1;
    }
    throw usage_error("unknown cluster command \"" + sub + "\"");
}

int cmd_generate(int argc, char** argv) {
    const args a(argc, argv, 2,
                 {"--model", "--prompt", "--system", "--max-tokens", "--temperature", "--top-p",
                  "--top-k", "--seed", "--threads", "--kv-dtype", "--cluster"},
                 {"--chat", "--ids"});
    if (a.has("--cluster")) return cmd_generate_cluster(a);
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
    if (a.has("--ids")) print_ids(out);
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
        if (cmd == "cluster") return cmd_cluster(argc, argv);
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
