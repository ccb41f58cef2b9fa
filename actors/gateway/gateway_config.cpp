#include "actors/gateway/gateway_config.hpp"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace longcat::gateway {

namespace {

std::string trim(const std::string& text) {
    const size_t begin = text.find_first_not_of(" \t\r\n");
    if (begin == std::string::npos) return "";
    return text.substr(begin, text.find_last_not_of(" \t\r\n") - begin + 1);
}

}  // namespace

// -- gateway_config ---------------------------------------------------------------------------

std::vector<std::string> gateway_config::coordinator_list() const {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= coordinators.size()) {
        const size_t comma = coordinators.find(',', start);
        std::string item = coordinators.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
        while (!item.empty() && item.front() == ' ') item.erase(item.begin());
        while (!item.empty() && item.back() == ' ') item.pop_back();
        if (!item.empty()) out.push_back(item);
        if (comma == std::string::npos) break;
        start = comma + 1;
    }
    return out;
}

std::optional<std::string> gateway_config::validate() const {
    auto at_least = [](const char* name, int64_t value, int64_t min) -> std::optional<std::string> {
        if (value < min) return std::string(name) + " must be >= " + std::to_string(min) + ", got " + std::to_string(value);
        return std::nullopt;
    };
    if (host.empty()) return "host must not be empty";
    if (port < 0 || port > 65535) return "port must be in [0, 65535], got " + std::to_string(port);
    for (const auto& check : {at_least("io_threads", io_threads, 1), at_least("max_body_bytes", max_body_bytes, 1),
                              at_least("header_deadline_ms", header_deadline_ms, 1),
                              at_least("body_deadline_ms", body_deadline_ms, 1),
                              at_least("request_deadline_ms", request_deadline_ms, 1),
                              at_least("retry_after_s", retry_after_s, 0), at_least("drain_grace_ms", drain_grace_ms, 0),
                              at_least("max_tokens_limit", max_tokens_limit, 1), at_least("max_model_len", max_model_len, 0),
                              at_least("max_running_per_backend", max_running_per_backend, 1),
                              at_least("queue_bound", queue_bound, 0),
                              at_least("connect_timeout_ms", connect_timeout_ms, 1)}) {
        if (check) return check;
    }
    if (model_dir.empty()) return "model_dir must be set (it holds tokenizer.json and config.json)";
    if (coordinator_list().empty())
        return "coordinators must name at least one coordinator (HOST:PORT, comma-separated)";
    for (const std::string& c : coordinator_list()) {
        const auto colon = c.rfind(':');
        if (colon == std::string::npos || colon == 0 || colon + 1 == c.size() ||
            c.find_first_not_of("0123456789", colon + 1) != std::string::npos)
            return "coordinators: \"" + c + "\" is not HOST:PORT";
    }
    return std::nullopt;
}

proto::expected<std::vector<std::string>, std::string> gateway_config::load_api_keys() const {
    std::vector<std::string> keys;
    std::stringstream list(api_keys);
    for (std::string key; std::getline(list, key, ',');)
        if (!trim(key).empty()) keys.push_back(trim(key));
    // Asking for keys and getting none (an empty file: a secret that was not mounted; a list of
    // only commas) would turn authentication off: refused instead.
    if (!api_keys.empty() && keys.empty())
        return proto::unexpected<std::string>("api-keys: \"" + api_keys + "\" holds no key");
    if (!api_keys_file.empty()) {
        std::ifstream in(api_keys_file);
        if (!in) return proto::unexpected<std::string>("api_keys_file: cannot read " + api_keys_file);
        size_t from_file = 0;
        for (std::string line; std::getline(in, line);) {
            line = trim(line);
            if (!line.empty() && line[0] != '#') {
                keys.push_back(line);
                ++from_file;
            }
        }
        if (from_file == 0)
            return proto::unexpected<std::string>("api_keys_file: " + api_keys_file +
                                                  " holds no key (only blank lines and comments)");
    }
    return keys;
}

// -- gateway_options --------------------------------------------------------------------------

gateway_options::gateway_options(gateway_config& c) {
    add("host", &c.host, "IP address to listen on");
    add("port", &c.port, "TCP port (0 = ephemeral)");
    add("io-threads", &c.io_threads, "HTTP io threads");
    add("max-body-bytes", &c.max_body_bytes, "largest request body (413 beyond)");
    add("header-deadline-ms", &c.header_deadline_ms, "request header must arrive within (idle keep-alive too)");
    add("body-deadline-ms", &c.body_deadline_ms, "request body must arrive within (408 beyond)");
    add("request-deadline-ms", &c.request_deadline_ms, "a whole request must end within (504 beyond)");
    add("api-keys", &c.api_keys, "comma-separated API keys (none = no authentication)", /*secret=*/true);
    add("api-keys-file", &c.api_keys_file, "file with one API key per line");
    add("retry-after-s", &c.retry_after_s, "Retry-After of a 429");
    add("drain-grace-ms", &c.drain_grace_ms, "on SIGTERM, how long in-flight requests may finish");
    add("model-dir", &c.model_dir, "checkpoint directory (tokenizer, config.json, weights)");
    add("served-model-name", &c.served_model_name, "the model name clients use (default: model-dir's name)");
    add("max-tokens-limit", &c.max_tokens_limit, "largest max_tokens accepted");
    add("max-model-len", &c.max_model_len, "context length (0 = config.json max_position_embeddings)");
    add("max-running-per-backend", &c.max_running_per_backend, "router: requests in flight per backend");
    add("queue-bound", &c.queue_bound, "router: requests waiting for a slot (429 beyond)");
    add("metrics-address", &c.metrics_address, "host:port of /metrics /healthz /readyz");
    add("coordinators", &c.coordinators, "the cluster's coordinators, HOST:PORT comma-separated (the router picks by load)");
    add("connect-timeout-ms", &c.connect_timeout_ms, "how long to keep trying to reach each coordinator at start");
    add("port-file", &c.port_file, "write the bound port to this file once listening");
}

void gateway_options::add(const std::string& name, std::string* field, const std::string& help, bool secret) {
    options_.push_back({name, help, [field](const std::string& value) { *field = value; },
                        [field] { return *field; }, "default", secret});
}

void gateway_options::add(const std::string& name, int64_t* field, const std::string& help) {
    options_.push_back({name, help,
                        [field](const std::string& value) {
                            size_t used = 0;
                            int64_t parsed = 0;
                            try {
                                parsed = std::stoll(value, &used);
                            } catch (const std::exception&) {
                                used = 0;
                            }
                            if (used == 0 || used != value.size())
                                throw std::invalid_argument("must be an integer, got \"" + value + "\"");
                            *field = parsed;
                        },
                        [field] { return std::to_string(*field); }});
}

std::string gateway_options::env_name(const std::string& option) {
    std::string out = "LONGCAT_GATEWAY_" + option;
    for (char& c : out) c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return out;
}

void gateway_options::set(const std::string& name, const std::string& value, const std::string& source) {
    std::string key = name;
    for (char& c : key) c = c == '_' ? '-' : c;  // file keys may use snake_case
    for (option& o : options_) {
        if (o.name != key) continue;
        try {
            o.set(value);
        } catch (const std::invalid_argument& e) {
            throw std::invalid_argument(key + " " + e.what() + " (from " + source + ")");
        }
        o.source = source;
        return;
    }
    throw std::invalid_argument("unknown option \"" + name + "\" (from " + source + ")");
}

void gateway_options::apply_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw std::invalid_argument("cannot read config file " + path);
    nlohmann::json doc;
    try {
        doc = nlohmann::json::parse(in);
    } catch (const std::exception& e) {
        throw std::invalid_argument("config file " + path + ": " + e.what());
    }
    if (!doc.is_object()) throw std::invalid_argument("config file " + path + ": not a JSON object");
    for (const auto& [key, value] : doc.items()) {
        std::string text;
        if (value.is_string()) text = value.get<std::string>();
        else if (value.is_number_integer()) text = std::to_string(value.get<int64_t>());
        else if (value.is_array() && key.find("api") == 0) {  // "api_keys": ["a", "b"]
            for (const auto& item : value) {
                if (!item.is_string()) throw std::invalid_argument("config file " + path + ": " + key + " items must be strings");
                text += (text.empty() ? "" : ",") + item.get<std::string>();
            }
        } else {
            throw std::invalid_argument("config file " + path + ": " + key + " must be a string or an integer");
        }
        set(key, text, "file " + path);
    }
}

proto::expected<bool, std::string> gateway_options::parse(const std::vector<std::string>& args, const env_lookup& env) {
    try {
        std::string file;
        std::vector<std::pair<std::string, std::string>> pairs;
        for (size_t arg_idx = 0; arg_idx < args.size(); ++arg_idx) {
            const std::string& arg = args[arg_idx];
            if (arg == "--help" || arg == "-h") return false;
            if (!arg.starts_with("--")) throw std::invalid_argument("unexpected argument \"" + arg + "\"");
            std::string name = arg.substr(2), value;
            if (const size_t eq = name.find('='); eq != std::string::npos) {
                value = name.substr(eq + 1);
                name.resize(eq);
            } else {
                if (arg_idx + 1 >= args.size()) throw std::invalid_argument("--" + name + " needs a value");
                value = args[++arg_idx];
            }
            if (name == "config") file = value;
            else pairs.emplace_back(name, value);
        }
        if (!file.empty()) apply_file(file);
        for (const auto& [name, value] : pairs) set(name, value, "command line");
        for (option& o : options_) {
            std::optional<std::string> value;
            if (env) {
                value = env(env_name(o.name));
            } else if (const char* raw = std::getenv(env_name(o.name).c_str())) {
                value = raw;
            }
            if (value) set(o.name, *value, "environment " + env_name(o.name));
        }
    } catch (const std::invalid_argument& e) {
        return proto::unexpected<std::string>(e.what());
    }
    return true;
}

std::string gateway_options::usage() const {
    std::ostringstream out;
    out << "longcat-gateway [--config FILE.json] [--OPTION VALUE ...]\n"
        << "layers: defaults < file < command line < environment (LONGCAT_GATEWAY_OPTION)\n";
    for (const option& o : options_)
        out << "  --" << o.name << " (default " << (o.secret ? "" : o.get()) << ")  " << o.help << "\n";
    return out.str();
}

std::string gateway_options::print() const {
    std::ostringstream out;
    out << "longcat-gateway effective config:\n";
    for (const option& o : options_) {
        std::string value = o.get();
        if (o.secret && !value.empty()) value = "<set, hidden>";
        out << "  " << o.name << " = " << value << "   (" << o.source << ")\n";
    }
    return out.str();
}

}  // namespace longcat::gateway
