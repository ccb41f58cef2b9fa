// Command-line values shared by the benchmarks: `--name value` pairs, nothing more.
#pragma once

#include <string>

namespace longcat::bench {

// The argument after the first one equal to `name` (`--steps 8` → "8"), else `def`.
inline std::string arg(int argc, char** argv, const std::string& name, const std::string& def) {
    for (int i = 1; i + 1 < argc; ++i)
        if (argv[i] == name) return argv[i + 1];
    return def;
}

}  // namespace longcat::bench
