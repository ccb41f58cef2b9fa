// gateway_config: the one validated config struct of longcat-gateway (STYLE.md §7), and how it
// is read: the JSON file given by --config FILE (keys = option names), then the command line
// (--name value or --name=value), then the environment (LONGCAT_GATEWAY_<NAME>, upper case,
// '-' → '_'), later layers winning. The struct's initializers are the defaults. print() shows
// the effective config and where each value came from (API keys masked).
// Model facts (context length, vocabulary) come from the checkpoint's config.json, not from here;
// max_model_len only lowers the context.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "proto/expected.hpp"

namespace longcat::gateway {

struct gateway_config {
    // -- HTTP -------------------------------------------------------------------------------------
    std::string host = "127.0.0.1";
    int64_t port = 8000;  // 0 = ephemeral (printed, and written to port_file)
    int64_t io_threads = 2;
    int64_t max_body_bytes = 1 << 20;
    int64_t header_deadline_ms = 10'000;
    int64_t body_deadline_ms = 30'000;
    int64_t request_deadline_ms = 600'000;
    std::string api_keys;       // comma-separated; with api_keys_file, both count; none = no auth
    std::string api_keys_file;  // one key per line ('#' starts a comment line)
    int64_t retry_after_s = 1;  // Retry-After of a 429
    int64_t drain_grace_ms = 30'000;  // SIGTERM: in-flight requests get this long to finish
    // -- model ------------------------------------------------------------------------------------
    std::string model_dir;          // tokenizer.json, tokenizer_config.json, config.json (+ weights)
    std::string served_model_name;  // "" = the model directory's name
    int64_t max_tokens_limit = 4096;
    int64_t max_model_len = 0;  // 0 = config.json max_position_embeddings; else at most that
    // -- router -----------------------------------------------------------------------------------
    int64_t max_running_per_backend = 16;
    int64_t queue_bound = 64;
    // -- service ----------------------------------------------------------------------------------
    std::string metrics_address = "127.0.0.1:0";  // /metrics, /healthz, /readyz
    // The backends: the cluster's coordinators (CAF), one router entry each.
    std::string coordinators;  // "HOST:PORT[,HOST:PORT...]"
    int64_t connect_timeout_ms = 30'000;
    std::string port_file;        // when set, the bound port is written there once listening

    std::vector<std::string> coordinator_list() const;  // coordinators, split and trimmed
    // The first invalid field, named, or nullopt.
    std::optional<std::string> validate() const;
    // api_keys and the keys of api_keys_file; an error names an unreadable file.
    proto::expected<std::vector<std::string>, std::string> load_api_keys() const;
};

using env_lookup = std::function<std::optional<std::string>(const std::string& name)>;

class gateway_options {
public:
    explicit gateway_options(gateway_config& config);

    // Applies file → args → environment. args are the arguments after the program name.
    // Returns false after --help (the caller prints usage()); an error names the option, the
    // bad value and the layer it came from.
    proto::expected<bool, std::string> parse(const std::vector<std::string>& args,
                                             const env_lookup& env = {});
    std::string usage() const;
    std::string print() const;
    static std::string env_name(const std::string& option);

private:
    struct option {
        std::string name;
        std::string help;
        std::function<void(const std::string&)> set;  // throws std::invalid_argument
        std::function<std::string()> get;
        std::string source = "default";
        bool secret = false;
    };
    void add(const std::string& name, std::string* field, const std::string& help, bool secret = false);
    void add(const std::string& name, int64_t* field, const std::string& help);
    void set(const std::string& name, const std::string& value, const std::string& source);
    void apply_file(const std::string& path);

    std::vector<option> options_;
};

}  // namespace longcat::gateway
