#include "actors/control/service_options.hpp"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

namespace longcat::control {

namespace {

template <class T>
T parse_integer(const std::string& name, const std::string& value) {
    try {
        size_t pos = 0;
        const long long parsed = std::stoll(value, &pos);
        if (pos != value.size()) throw std::invalid_argument("trailing characters");
        if (parsed < static_cast<long long>(std::numeric_limits<T>::min()) ||
            parsed > static_cast<long long>(std::numeric_limits<T>::max()))
            throw std::out_of_range("range");
        return static_cast<T>(parsed);
    } catch (const std::exception&) {
        throw config_error(name + " must be an integer in range, got \"" + value + "\"");
    }
}

}  // namespace

service_options::service_options(std::string service) : service_(std::move(service)) {
    options_.reserve(64);
}

void service_options::add(const std::string& name, std::string* field, const std::string& help) {
    options_.push_back({name, help, [field](const std::string& v) { *field = v; },
                        [field] { return *field; }});
}
void service_options::add(const std::string& name, int64_t* field, const std::string& help) {
    options_.push_back({name, help,
                        [field, name](const std::string& v) { *field = parse_integer<int64_t>(name, v); },
                        [field] { return std::to_string(*field); }});
}
void service_options::add(const std::string& name, int32_t* field, const std::string& help) {
    options_.push_back({name, help,
                        [field, name](const std::string& v) { *field = parse_integer<int32_t>(name, v); },
                        [field] { return std::to_string(*field); }});
}
void service_options::add(const std::string& name, uint16_t* field, const std::string& help) {
    options_.push_back({name, help,
                        [field, name](const std::string& v) { *field = parse_integer<uint16_t>(name, v); },
                        [field] { return std::to_string(*field); }});
}
void service_options::add(const std::string& name, double* field, const std::string& help) {
    options_.push_back({name, help,
                        [field, name](const std::string& v) {
                            try {
                                size_t pos = 0;
                                *field = std::stod(v, &pos);
                                if (pos != v.size()) throw std::invalid_argument("trailing");
                            } catch (const std::exception&) {
                                throw config_error(name + " must be a number, got \"" + v + "\"");
                            }
                        },
                        [field] {
                            std::ostringstream out;
                            out << *field;
                            return out.str();
                        }});
}
void service_options::add(const std::string& name, bool* field, const std::string& help) {
    options_.push_back({name, help,
                        [field, name](const std::string& v) {
                            if (v == "1" || v == "true" || v == "yes" || v == "on")
                                *field = true;
                            else if (v == "0" || v == "false" || v == "no" || v == "off")
                                *field = false;
                            else
                                throw config_error(name + " must be true or false, got \"" + v + "\"");
                        },
                        [field] { return std::string(*field ? "true" : "false"); }});
}

service_options::option* service_options::find(const std::string& name) {
    for (option& o : options_)
        if (o.name == name) return &o;
    return nullptr;
}

void service_options::set(const std::string& name, const std::string& value,
                          const std::string& source) {
    option* o = find(name);
    if (o == nullptr) throw config_error("unknown option \"" + name + "\" (from " + source + ")");
    try {
        o->set(value);
    } catch (const config_error& e) {
        throw config_error(std::string(e.what()) + " (from " + source + ")");
    }
    o->source = source;
}

std::string service_options::env_name(const std::string& option_name) const {
    std::string out = "LONGCAT_" + service_ + "_" + option_name;
    for (char& c : out) c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return out;
}

void service_options::apply_file(const std::string& path) {
    std::ifstream in(path);
    if (!in) throw config_error("cannot read config file " + path);
    nlohmann::json doc;
    try {
        doc = nlohmann::json::parse(in);
    } catch (const std::exception& e) {
        throw config_error("config file " + path + ": " + e.what());
    }
    if (!doc.is_object()) throw config_error("config file " + path + ": not a JSON object");
    for (const auto& [key, value] : doc.items()) {
        std::string text;
        if (value.is_string())
            text = value.get<std::string>();
        else if (value.is_boolean())
            text = value.get<bool>() ? "true" : "false";
        else if (value.is_number_integer())
            text = std::to_string(value.get<int64_t>());
        else if (value.is_number())
            text = std::to_string(value.get<double>());
        else
            throw config_error("config file " + path + ": " + key + " must be a scalar");
        set(key, text, "file " + path);
    }
}

void service_options::apply_args(const std::vector<std::string>& args) {
    for (size_t idx = 0; idx < args.size(); ++idx) {
        const std::string& a = args[idx];
        if (a.rfind("--", 0) != 0) throw config_error("unexpected argument \"" + a + "\"");
        std::string name = a.substr(2), value;
        if (const auto eq = name.find('='); eq != std::string::npos) {
            value = name.substr(eq + 1);
            name = name.substr(0, eq);
        } else {
            if (idx + 1 >= args.size()) throw config_error("--" + name + " needs a value");
            value = args[++idx];
        }
        set(name, value, "command line");
    }
}

void service_options::apply_environment() {
    for (option& o : options_) {
        if (const char* v = std::getenv(env_name(o.name).c_str())) set(o.name, v, "environment");
    }
}

bool service_options::parse(int argc, char** argv, int first) {
    std::vector<std::string> args;
    std::string file;
    for (int idx = first; idx < argc; ++idx) {
        const std::string a = argv[idx];
        if (a == "--help" || a == "-h") {
            std::cout << usage();
            return false;
        }
        if (a == "--config") {
            if (idx + 1 >= argc) throw config_error("--config needs a file");
            file = argv[++idx];
            continue;
        }
        args.push_back(a);
    }
    if (!file.empty()) apply_file(file);
    apply_args(args);
    apply_environment();
    return true;
}

std::string service_options::usage() const {
    std::ostringstream out;
    out << "longcat-" << service_ << " [--config FILE.json] [--OPTION VALUE ...]\n"
        << "layers: defaults < file < command line < environment (" << env_name("OPTION") << ")\n";
    for (const option& o : options_)
        out << "  --" << o.name << " (default " << o.get() << ")  " << o.help << "\n";
    return out.str();
}

std::string service_options::print() const {
    std::ostringstream out;
    out << "longcat-" << service_ << " effective config:\n";
    for (const option& o : options_) out << "  " << o.name << " = " << o.get() << "   (" << o.source << ")\n";
    return out.str();
}

}  // namespace longcat::control
