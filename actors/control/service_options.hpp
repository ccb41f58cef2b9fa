// service_options: how every service reads its one config struct (STYLE.md §7).
// Each option is declared once (name, help, a pointer to its field) and read in three layers,
// later ones winning: the JSON file given by --config FILE (keys = option names), then the
// command line (--name value), then the environment (LONGCAT_<SERVICE>_<NAME>, upper case,
// '-' → '_'). The struct's own initializers are the defaults. print() shows the effective
// config and where each value came from. No CAF here.
#pragma once

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace longcat::control {

// A bad option name or value; the message names the option and the layer it came from.
class config_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class service_options {
public:
    // `service` names the env prefix: "coordinator" → LONGCAT_COORDINATOR_*.
    explicit service_options(std::string service);

    void add(const std::string& name, std::string* field, const std::string& help);
    void add(const std::string& name, int64_t* field, const std::string& help);
    void add(const std::string& name, uint16_t* field, const std::string& help);
    void add(const std::string& name, int32_t* field, const std::string& help);
    void add(const std::string& name, double* field, const std::string& help);
    void add(const std::string& name, bool* field, const std::string& help);

    // Applies file → command line → environment. argv[first..] holds only --name value pairs
    // (plus --config FILE and --help). Returns false when --help was given (usage printed).
    bool parse(int argc, char** argv, int first = 1);
    // Same layers from explicit inputs (tests).
    void apply_file(const std::string& path);
    void apply_args(const std::vector<std::string>& args);
    void apply_environment();

    std::string env_name(const std::string& option) const;
    std::string usage() const;
    // "<service> effective config:\n  name = value   (default|file|command line|environment)"
    std::string print() const;

private:
    struct option {
        std::string name;
        std::string help;
        std::function<void(const std::string&)> set;  // throws config_error on a bad value
        std::function<std::string()> get;
        std::string source = "default";
    };
    option* find(const std::string& name);
    void set(const std::string& name, const std::string& value, const std::string& source);

    std::string service_;
    std::vector<option> options_;
};

}  // namespace longcat::control
