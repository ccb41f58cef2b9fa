#include "actors/control/launcher.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "actors/control/peer_liveness.hpp"
#include "model/config.hpp"

namespace longcat::control {

namespace fs = std::filesystem;
using json = nlohmann::json;
using failure = proto::unexpected<std::string>;

std::string launched_process::metrics_url() const {
    return "http://127.0.0.1:" + std::to_string(metrics_port) + "/metrics";
}

// -- small OS helpers -------------------------------------------------------------------------------

namespace {

// A port `host` can bind now (tested with bind, then released; 0 when it cannot).
bool can_bind(const std::string& host, uint16_t want, uint16_t* got) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(want);
    ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
    bool ok = false;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
        socklen_t len = sizeof addr;
        ok = ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
        if (ok) *got = ntohs(addr.sin_port);
    }
    ::close(fd);
    return ok;
}

// The lower end of the kernel's ephemeral range (the ports bind(0) and connect() hand out).
int ephemeral_low() {
    std::ifstream f("/proc/sys/net/ipv4/ip_local_port_range");
    int low = 0, high = 0;
    if (f >> low >> high) return low;
    return 32768;  // the kernel's default
}

// Ports the administrator keeps for daemons (ip_local_reserved_ports: "8080,9000-9100"): the
// kernel never hands them out, but an explicit bind would take them.
std::set<int> reserved_ports() {
    std::set<int> out;
    std::ifstream f("/proc/sys/net/ipv4/ip_local_reserved_ports");
    std::string item;
    while (std::getline(f, item, ',')) {
        int low = 0, high = 0;
        const auto dash = item.find('-');
        try {
            low = std::stoi(item.substr(0, dash));
            high = dash == std::string::npos ? low : std::stoi(item.substr(dash + 1));
        } catch (const std::exception&) {
            continue;
        }
        for (int port = std::max(low, 1); port <= std::min(high, 65535); ++port) out.insert(port);
    }
    return out;
}

}  // namespace

uint16_t pick_free_port(const std::string& host) {
    // Below the ephemeral range: a port the kernel hands out (bind(0) of a UCX listener or a
    // CAF endpoint, the local port of a connection, possibly in another cluster started by a
    // test running alongside) could take the port between this pick and the child's bind.
    // Random, so two launchers picking at the same moment rarely choose the same port.
    static const int low = ephemeral_low();
    static const std::set<int> reserved = reserved_ports();
    const int first = std::max(1024, std::min(10000, low / 2));
    if (low - first > 100) {  // else no room below the range: let the kernel choose
        static thread_local std::mt19937 rng(std::random_device{}());
        std::uniform_int_distribution<int> pick(first, low - 1);
        for (int attempt = 0; attempt < 200; ++attempt) {
            const int want = pick(rng);
            uint16_t got = 0;
            if (reserved.count(want) == 0 && can_bind(host, static_cast<uint16_t>(want), &got)) return got;
        }
    }
    uint16_t got = 0;
    return can_bind(host, 0, &got) ? got : 0;
}

int http_get_status(const std::string& host, uint16_t port, const std::string& path,
                    std::chrono::milliseconds timeout, std::string* body) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return 0;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
    const auto until = std::chrono::steady_clock::now() + timeout;
    auto wait_for = [&](short events) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        if (left.count() <= 0) return false;
        pollfd pfd{fd, events, 0};
        return ::poll(&pfd, 1, static_cast<int>(left.count())) == 1 && (pfd.revents & (events | POLLHUP));
    };
    int status = 0;
    std::string response;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 || errno == EINPROGRESS) {
        int error = 0;
        socklen_t len = sizeof error;
        if (wait_for(POLLOUT) && ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) == 0 && error == 0) {
            const std::string request = "GET " + path + " HTTP/1.0\r\nHost: " + host + "\r\n\r\n";
            if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
                char buffer[4096];
                while (wait_for(POLLIN)) {
                    const ssize_t got = ::recv(fd, buffer, sizeof buffer, 0);
                    if (got <= 0) break;
                    response.append(buffer, static_cast<size_t>(got));
                }
                if (response.rfind("HTTP/", 0) == 0) {
                    const auto space = response.find(' ');
                    if (space != std::string::npos) status = std::atoi(response.c_str() + space + 1);
                }
            }
        }
    }
    ::close(fd);
    if (body) {
        const auto split = response.find("\r\n\r\n");
        *body = split == std::string::npos ? "" : response.substr(split + 4);
    }
    return status;
}

namespace {

std::string read_link(const std::string& path) {
    char buffer[4096];
    const ssize_t len = ::readlink(path.c_str(), buffer, sizeof buffer - 1);
    if (len <= 0) return "";
    buffer[len] = '\0';
    std::string out(buffer);
    const std::string deleted = " (deleted)";
    if (out.size() > deleted.size() && out.compare(out.size() - deleted.size(), deleted.size(), deleted) == 0)
        out.resize(out.size() - deleted.size());
    return out;
}

// /proc/PID/stat's state (field 3) and start time (field 22, clock ticks after boot); state 0
// and start time 0 when the process is gone.
struct process_stat {
    char state = 0;
    uint64_t start_time = 0;
};
process_stat read_process_stat(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string stat;
    std::getline(in, stat);
    const auto paren = stat.rfind(')');  // the command name may hold spaces and parentheses
    if (paren == std::string::npos) return {};
    std::istringstream fields(stat.substr(paren + 1));
    process_stat out;
    std::string field;
    for (int idx = 3; idx <= 22 && fields >> field; ++idx) {
        if (idx == 3) out.state = field.empty() ? 0 : field[0];
        if (idx == 22) out.start_time = std::strtoull(field.c_str(), nullptr, 10);
    }
    return out;
}

// When pid started, in clock ticks after boot, or 0 if it is gone.
uint64_t process_start_time(int pid) { return read_process_stat(pid).start_time; }

// Alive, still running `binary`, and (when recorded) the process that started then: a zombie or
// a reused pid is not ours — not even one running the same binary for another cluster.
bool is_our_process(const launched_process& process) {
    if (process.pid <= 0) return false;
    const std::string exe = read_link("/proc/" + std::to_string(process.pid) + "/exe");
    if (exe.empty()) return false;
    std::error_code ec;
    if (!fs::equivalent(exe, process.binary, ec) && exe != process.binary) return false;
    return process.start_time == 0 || process_start_time(process.pid) == process.start_time;
}

// Sent SIGTERM and not yet gone. A process that is exiting has already dropped its memory map,
// so /proc/PID/exe no longer reads and is_our_process says no, while it still runs (its parent's
// waitpid does not see it yet; its ports may still be bound). Gone once its pid is free, a zombie
// or another process's (start time). Without a recorded start time, as is_our_process says.
bool still_exiting(const launched_process& process) {
    if (process.pid <= 0 || process.start_time == 0) return false;
    const process_stat now = read_process_stat(process.pid);
    if (now.state == 0 || now.state == 'Z' || now.state == 'X' || now.state == 'x') return false;
    return now.start_time == process.start_time;
}

std::string log_tail(const std::string& file, size_t max_lines = 15) {
    std::ifstream in(file);
    std::vector<std::string> lines;
    std::string line;
    while (std::getline(in, line)) lines.push_back(line);
    std::string out;
    for (size_t idx = lines.size() > max_lines ? lines.size() - max_lines : 0; idx < lines.size(); ++idx)
        out += "    " + lines[idx] + "\n";
    return out;
}

fs::path find_binary(const fs::path& bin_dir, const std::string& name, const std::string& subdir) {
    std::vector<fs::path> candidates;
    if (!bin_dir.empty()) {
        candidates.push_back(bin_dir / name);
        candidates.push_back(bin_dir / subdir / name);
    }
    const fs::path self = fs::path(read_link("/proc/self/exe")).parent_path();
    candidates.push_back(self / name);                         // installed side by side
    candidates.push_back(self.parent_path() / subdir / name);  // build tree: services/<subdir>/
    for (const fs::path& candidate : candidates)
        if (::access(candidate.c_str(), X_OK) == 0) return fs::canonical(candidate);
    throw std::runtime_error("cannot find " + name + " (looked beside " + self.string() +
                             (bin_dir.empty() ? "" : " and in " + bin_dir.string()) + ")");
}

// The environment variable through which a service would take option `option`
// (LONGCAT_<SERVICE>_<OPTION>, service_options.hpp): the service is the binary's name after
// "longcat-".
std::string option_env_name(const fs::path& binary, const std::string& option) {
    std::string service = binary.filename().string();
    if (service.rfind("longcat-", 0) == 0) service = service.substr(8);
    std::string out = "LONGCAT_" + service + "_" + option;
    for (char& c : out)
        c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return out;
}

int spawn(const fs::path& binary, const std::vector<std::string>& args,
          const std::vector<std::string>& env, const std::string& log_file) {
    std::vector<std::string> argv_storage{binary.string()};
    argv_storage.insert(argv_storage.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_storage) argv.push_back(a.data());
    argv.push_back(nullptr);
    // A service's environment layer wins over its command line: a LONGCAT_<SERVICE>_<OPTION> in
    // the caller's environment would override what the launcher sets here (the address a
    // service binds, its metrics port, its name, the coordinator) and leave the state file wrong.
    // Those variables are removed in the child; any other option can still come from there.
    std::vector<std::string> overriding;
    for (const std::string& arg : args)
        if (arg.rfind("--", 0) == 0) overriding.push_back(option_env_name(binary, arg.substr(2)));
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        ::setsid();  // its own session: a terminal's Ctrl-C does not reach it
        const int log = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (log >= 0) {
            ::dup2(log, STDOUT_FILENO);
            ::dup2(log, STDERR_FILENO);
        }
        if (null >= 0) ::dup2(null, STDIN_FILENO);
        for (const std::string& name : overriding) ::unsetenv(name.c_str());
        for (const std::string& kv : env) {
            const auto eq = kv.find('=');
            if (eq != std::string::npos) ::setenv(kv.substr(0, eq).c_str(), kv.substr(eq + 1).c_str(), 1);
        }
        ::execv(binary.c_str(), argv.data());
        std::fprintf(stderr, "exec %s: %s\n", binary.c_str(), std::strerror(errno));
        ::_exit(127);
    }
    return pid;
}

json to_json(const cluster_state& state) {
    json out;
    out["topology"] = state.topology;
    out["model_dir"] = state.model_dir;
    out["host"] = state.host;
    out["coordinator"] = state.coordinator;
    if (!state.gateway_url.empty()) out["gateway_url"] = state.gateway_url;
    out["processes"] = json::array();
    for (const auto& p : state.processes)
        out["processes"].push_back({{"name", p.name},
                                    {"role", p.role},
                                    {"pid", p.pid},
                                    {"binary", p.binary},
                                    {"metrics_port", p.metrics_port},
                                    {"control_port", p.control_port},
                                    {"log_file", p.log_file},
                                    {"start_time", p.start_time},
                                    {"metrics_url", p.metrics_url()}});
    return out;
}

void write_state(const fs::path& file, const cluster_state& state) {
    const fs::path tmp = file.string() + ".tmp";
    std::ofstream(tmp) << to_json(state).dump(2) << "\n";
    fs::rename(tmp, file);
}

// `running`: the pids that were running when the stop began (cluster_down); a process of it that
// is gone by its turn stopped by itself meanwhile (a member follows its coordinator out).
void stop_processes(std::vector<launched_process>& processes, std::chrono::milliseconds grace,
                    std::vector<std::string>* report, const std::set<int>* running = nullptr) {
    std::set<int> signalled;
    for (const auto& p : processes) {
        if (is_our_process(p)) {
            ::kill(p.pid, SIGTERM);
            signalled.insert(p.pid);
            if (report) report->push_back(p.name + " (pid " + std::to_string(p.pid) + "): SIGTERM");
        } else if (report) {
            const bool stopped_meanwhile = running != nullptr && running->count(p.pid) > 0;
            const bool member = p.role != "coordinator" && p.role != "gateway";
            report->push_back(p.name + " (pid " + std::to_string(p.pid) + "): " +
                              (!stopped_meanwhile ? "already stopped"
                               : member           ? "stopped with the coordinator"
                                                  : "stopped meanwhile"));
        }
    }
    const auto until = std::chrono::steady_clock::now() + grace;
    for (;;) {
        bool any = false;
        for (const auto& p : processes) {
            ::waitpid(p.pid, nullptr, WNOHANG);  // reaps it when we are its parent
            any = any || is_our_process(p) || (signalled.count(p.pid) > 0 && still_exiting(p));
        }
        if (!any) return;
        if (std::chrono::steady_clock::now() >= until) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    for (const auto& p : processes) {
        if (is_our_process(p)) {
            ::kill(p.pid, SIGKILL);
            if (report) report->push_back(p.name + " (pid " + std::to_string(p.pid) + "): SIGKILL after grace");
            // Reap it when it is our child (`up` stopping what it started), for at most 5 s: a
            // process in an uninterruptible sleep (a hung driver or file system) dies only
            // when that ends, and `up` must not wait for it (`down` gets ECHILD at once).
            const auto reap_until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
            while (::waitpid(p.pid, nullptr, WNOHANG) == 0 &&
                   std::chrono::steady_clock::now() < reap_until)
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }
}

// Topology fields, checked before anything starts; an error names the field by its path.
// Absent (or null) → fallback.
int64_t int_field(const json& obj, const std::string& key, int64_t fallback, int64_t lo, int64_t hi,
                  const std::string& where) {
    const auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    const std::string name = "topology " + where + key;
    if (!it->is_number_integer())
        throw std::runtime_error(name + " must be an integer, got " + it->dump());
    const bool too_big =
        it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(hi);
    const int64_t value = too_big ? hi : it->get<int64_t>();
    if (too_big || value < lo || value > hi)
        throw std::runtime_error(name + " must be " + std::to_string(lo) + ".." +
                                 std::to_string(hi) + ", got " + it->dump());
    return value;
}

std::string string_field(const json& obj, const std::string& key, const std::string& fallback,
                         const std::string& where) {
    const auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_string())
        throw std::runtime_error("topology " + where + key + " must be a string, got " +
                                 it->dump());
    return it->get<std::string>();
}

// An array of objects (attention workers, expert groups).
const json& object_array(const json& topo, const std::string& key) {
    const auto it = topo.find(key);
    if (it == topo.end() || !it->is_array())
        throw std::runtime_error("topology " + key + " must be an array of objects");
    for (size_t idx = 0; idx < it->size(); ++idx)
        if (!(*it)[idx].is_object())
            throw std::runtime_error("topology " + key + "[" + std::to_string(idx) +
                                     "] must be an object, got " + (*it)[idx].dump());
    return *it;
}

uint16_t port_field(const json& obj, const std::string& key, const std::string& where) {
    return static_cast<uint16_t>(int_field(obj, key, 0, 0, 65535, where));  // 0: pick a free one
}

struct topology_group {
    std::string name;
    std::string experts;  // explicit list, or empty
    int share = 1;
    std::string pool;     // "" shared by every attention worker, or "prefill" / "decode"
};

}  // namespace

std::string describe_cluster(const cluster_state& state) {
    std::ostringstream out;
    out << "cluster " << state.topology << " on " << state.host << " (model " << state.model_dir << ")\n"
        << "  coordinator control plane: " << state.coordinator << "\n";
    if (!state.gateway_url.empty()) out << "  OpenAI API: " << state.gateway_url << "/v1\n";
    for (const auto& p : state.processes) {
        out << "  " << p.name << " [" << p.role << "] pid " << p.pid << ", metrics " << p.metrics_url();
        if (p.control_port) out << ", control port " << p.control_port;
        out << ", log " << p.log_file << "\n";
    }
    return out.str();
}

proto::expected<cluster_state, std::string> read_cluster_state(const fs::path& state_file) {
    try {
        std::ifstream in(state_file);
        if (!in) return failure("cannot read state file " + state_file.string());
        const json doc = json::parse(in);
        cluster_state state;
        state.topology = doc.at("topology").get<std::string>();
        state.model_dir = doc.at("model_dir").get<std::string>();
        state.host = doc.at("host").get<std::string>();
        state.coordinator = doc.at("coordinator").get<std::string>();
        state.gateway_url = doc.value("gateway_url", "");
        for (const auto& p : doc.at("processes")) {
            launched_process process;
            process.name = p.at("name").get<std::string>();
            process.role = p.at("role").get<std::string>();
            process.pid = p.at("pid").get<int>();
            process.binary = p.at("binary").get<std::string>();
            process.metrics_port = p.at("metrics_port").get<uint16_t>();
            process.control_port = p.at("control_port").get<uint16_t>();
            process.log_file = p.at("log_file").get<std::string>();
            process.start_time = p.value("start_time", uint64_t{0});  // 0: a state file from before
            state.processes.push_back(process);
        }
        return state;
    } catch (const std::exception& e) {
        return failure("state file " + state_file.string() + ": " + e.what());
    }
}

proto::expected<cluster_state, std::string> cluster_up(const cluster_up_options& opts) {
    cluster_state state;
    std::vector<launched_process>& started = state.processes;
    try {
        std::ifstream in(opts.topology);
        if (!in) return failure("cannot read topology " + opts.topology.string());
        const json topo = json::parse(in);
        if (!topo.is_object())
            return failure("topology " + opts.topology.string() + " must be a JSON object, got " +
                           topo.type_name());
        const model::model_config model = model::load_model_config(opts.model_dir / "config.json");
        if (fs::exists(opts.state_file)) {
            auto old = read_cluster_state(opts.state_file);
            if (old)
                for (const auto& p : old->processes)
                    if (is_our_process(p))
                        return failure("a cluster from " + opts.state_file.string() + " is still running (" +
                                       p.name + ", pid " + std::to_string(p.pid) +
                                       "); run `longcat cluster down` first");
        }
        const fs::path dir = fs::absolute(opts.state_file).parent_path();
        fs::create_directories(dir);
        state.topology = string_field(topo, "name", opts.topology.stem().string(), "");
        state.model_dir = fs::absolute(opts.model_dir).string();
        // Every service binds this address; an empty one would mean all interfaces.
        state.host = string_field(topo, "host", "127.0.0.1", "");
        if (state.host.empty())
            return failure("topology host must name an address (e.g. 127.0.0.1)");
        const int threads =
            static_cast<int>(int_field(topo, "threads_per_service", 1, 1, 1024, ""));
        const int max_batch = static_cast<int>(int_field(topo, "max_batch", 8, 1, 1 << 20, ""));
        std::vector<std::string> env = {"UCX_NET_DEVICES=lo", "UCX_TCP_CM_REUSEADDR=y",
                                        "UCX_WARN_UNUSED_ENV_VARS=n",
                                        "OMP_NUM_THREADS=" + std::to_string(threads)};
        // The data plane's transports (actors/transport/README.md): "tcp" keeps UCX's peer error
        // handling (which makes UCX 1.13 skip shared memory); "shm" turns it off so that
        // shared memory (sysv, cma) is used, dead peers being found by CAF + deadlines.
        const std::string transport = string_field(topo, "transport", "tcp", "");
        std::string error_mode = "peer";
        if (transport == "shm") {
            env.push_back("UCX_TLS=sm,self,tcp");
            error_mode = "none";
        } else if (transport == "tcp") {
            env.push_back("UCX_TLS=tcp,self");
        } else {
            return failure("topology transport must be \"tcp\" or \"shm\", got \"" + transport + "\"");
        }
        const int64_t kv_pages = int_field(topo, "kv_pages", 1024, 1, int64_t{1} << 31, "");
        const int64_t page_size = int_field(topo, "page_size", 16, 1, 1 << 16, "");
        const int64_t prefill_chunk =
            int_field(topo, "prefill_chunk", 256, 0, int64_t{1} << 31, "");
        const int pipeline_depth = static_cast<int>(int_field(topo, "pipeline_depth", 3, 1, 4, ""));
        const int64_t short_step_us = int_field(topo, "short_step_us", 2000, 0, 1000000, "");
        const int micro_batches = static_cast<int>(int_field(topo, "micro_batches", 1, 1, 4, ""));
        // The deadline of one step's results; a worker that misses it is let go of.
        const int64_t step_timeout_ms =
            int_field(topo, "step_timeout_ms", 30000, 1, int64_t{1} << 31, "");
        // How long the members wait on a silent coordinator (caf_runtime_options::peer_timeout)
        // and the coordinator on a silent expert group (its liveness probes).
        const int64_t peer_timeout_ms =
            int_field(topo, "peer_timeout_ms", kDefaultPeerTimeoutMs, 0, int64_t{1} << 31, "");
        if (auto bad = check_peer_timeout(peer_timeout_ms, "topology peer_timeout_ms"))
            return failure(*bad);
        // The caller's own UCX_NET_DEVICES / UCX_TLS win over the topology's (set last).
        for (const char* keep : {"UCX_NET_DEVICES", "UCX_TLS"})
            if (const char* value = std::getenv(keep)) env.push_back(std::string(keep) + "=" + value);
        env.insert(env.end(), opts.extra_env.begin(), opts.extra_env.end());

        // Expert placement: explicit lists, or contiguous runs in proportion to `share` — within
        // each pool when the groups are in pools (each pool holds every expert).
        std::vector<topology_group> groups;
        const json& group_list = object_array(topo, "expert_groups");
        for (size_t idx = 0; idx < group_list.size(); ++idx) {
            const json& g = group_list[idx];
            const std::string where = "expert_groups[" + std::to_string(idx) + "].";
            topology_group group{string_field(g, "name", "", where),
                                 string_field(g, "experts", "", where),
                                 static_cast<int>(int_field(g, "share", 1, 1, 1000000, where)),
                                 string_field(g, "pool", "", where)};
            if (group.name.empty())
                return failure("topology " + where + "name must be a non-empty string");
            groups.push_back(std::move(group));
        }
        if (groups.empty()) return failure("topology has no expert_groups");
        std::set<std::string> pools, roles;
        for (const auto& g : groups) {
            if (!g.pool.empty() && g.pool != "prefill" && g.pool != "decode")
                return failure("expert group " + g.name + ": pool must be \"prefill\" or \"decode\", got \"" +
                               g.pool + "\"");
            if (g.pool.empty() != groups.front().pool.empty())
                return failure("expert groups " + groups.front().name + " and " + g.name +
                               ": either every group names a pool or none does");
            pools.insert(g.pool);
        }
        const json& workers = object_array(topo, "attention");
        if (workers.empty()) return failure("topology has no attention workers");
        for (size_t idx = 0; idx < workers.size(); ++idx) {
            const json& w = workers[idx];
            const std::string where = "attention[" + std::to_string(idx) + "].";
            if (string_field(w, "name", "", where).empty())
                return failure("topology " + where + "name must be a non-empty string");
            const std::string role = string_field(w, "role", "decode", where);
            if (role != "prefill" && role != "decode")
                return failure("topology " + where +
                               "role must be \"prefill\" or \"decode\", got \"" + role + "\"");
            string_field(w, "tp_group", "tp-0", where);
            const int64_t tp_size = int_field(w, "tp_size", 1, 1, 1024, where);
            int_field(w, "tp_rank", 0, 0, tp_size - 1, where);
            roles.insert(role);
        }
        if (!groups.front().pool.empty()) {
            for (const std::string& role : roles)
                if (pools.count(role) == 0)
                    return failure("attention workers with role " + role + " have no expert group in pool " + role);
            for (const std::string& pool : pools)
                if (roles.count(pool) == 0)
                    return failure("expert pool " + pool + " has no attention worker with role " + pool);
        }
        std::map<std::string, int64_t> total_share, cumulative;
        for (const auto& g : groups) total_share[g.pool] += g.experts.empty() ? g.share : 0;
        std::string placement;
        const int64_t num_experts = model.n_routed_experts;
        for (const auto& g : groups) {
            std::string experts = g.experts;
            if (experts.empty()) {
                const int64_t shares = std::max<int64_t>(1, total_share[g.pool]);
                const int64_t begin = cumulative[g.pool] * num_experts / shares;
                cumulative[g.pool] += g.share;
                const int64_t end = cumulative[g.pool] * num_experts / shares;
                if (end <= begin) return failure("expert group " + g.name + " would hold no expert");
                experts = std::to_string(begin) + "-" + std::to_string(end - 1);
            }
            placement += (placement.empty() ? "" : ";") + g.name + "=" + experts;
        }

        auto log_of = [&](const std::string& name) { return (dir / (name + ".log")).string(); };
        // Nothing binds before the children start: no port twice, and none that the topology
        // fixes (the coordinator's and the gateway's, if set).
        std::set<uint16_t> picked;
        const uint16_t fixed_coordinator = port_field(topo, "coordinator_port", "");
        const std::string coordinator_name =
            string_field(topo, "coordinator_name", "coordinator", "");
        // The gateway (optional): an object of gateway options, passed on as --key value, except
        // those the launcher sets itself (the address it binds, where its metrics are, the
        // coordinator, the model) — a topology overriding them would leave the state file wrong.
        const json* gateway = nullptr;
        if (const auto it = topo.find("gateway"); it != topo.end() && !it->is_null()) {
            if (!it->is_object())
                return failure("topology gateway must be an object of gateway options, got " +
                               it->dump());
            gateway = &*it;
            for (const auto& [key, value] : gateway->items())
                if (key == "host" || key == "metrics-address" || key == "coordinators" ||
                    key == "model-dir")
                    return failure("topology gateway." + key +
                                   " is set by the launcher and cannot be given");
            string_field(*gateway, "name", "gateway", "gateway.");
        }
        const uint16_t fixed_gateway = gateway ? port_field(*gateway, "port", "gateway.") : 0;
        if (fixed_coordinator != 0) picked.insert(fixed_coordinator);
        if (fixed_gateway != 0 && !picked.insert(fixed_gateway).second)
            return failure("topology gives the coordinator and the gateway the same port " +
                           std::to_string(fixed_gateway));
        auto metrics_port = [&] {
            for (int attempt = 0; attempt < 20; ++attempt) {
                const uint16_t port = pick_free_port(state.host);
                if (port == 0) break;
                if (picked.insert(port).second) return port;
            }
            throw std::runtime_error("no free port on " + state.host);
        };
        const std::string model_dir = state.model_dir;

        // coordinator
        launched_process coordinator;
        coordinator.name = coordinator_name;
        coordinator.role = "coordinator";
        coordinator.binary = find_binary(opts.bin_dir, "longcat-coordinator", "coordinator").string();
        coordinator.metrics_port = metrics_port();
        coordinator.control_port = fixed_coordinator;
        if (coordinator.control_port == 0) coordinator.control_port = metrics_port();
        coordinator.log_file = log_of(coordinator.name);
        state.coordinator = state.host + ":" + std::to_string(coordinator.control_port);
        // clang-format off
        coordinator.pid = spawn(coordinator.binary,
                                {"--name", coordinator.name, "--model", model_dir, "--listen-host", state.host,
                                 "--port", std::to_string(coordinator.control_port), "--metrics-address",
                                 state.host + ":" + std::to_string(coordinator.metrics_port),
                                 "--expected-attention-workers", std::to_string(workers.size()),
                                 "--expert-placement", placement, "--max-batch", std::to_string(max_batch),
                                 "--prefill-chunk", std::to_string(prefill_chunk),
                                 "--pipeline-depth", std::to_string(pipeline_depth),
                                 "--short-step-us", std::to_string(short_step_us),
                                 "--peer-timeout-ms", std::to_string(peer_timeout_ms),
                                 "--step-timeout-ms", std::to_string(step_timeout_ms),
                                 "--drain-grace-ms", "8000"},  // below `down`'s default 10 s grace
                                env, coordinator.log_file);
        // clang-format on
        coordinator.start_time = process_start_time(coordinator.pid);
        started.push_back(coordinator);

        const std::string experts_binary = find_binary(opts.bin_dir, "longcat-experts", "experts").string();
        for (const auto& g : groups) {
            launched_process p;
            p.name = g.name;
            p.role = "experts";
            p.binary = experts_binary;
            p.metrics_port = metrics_port();
            p.log_file = log_of(p.name);
            p.pid = spawn(p.binary,
                          {"--name", p.name, "--model", model_dir, "--coordinator", state.coordinator,
                           "--listen-host", state.host, "--metrics-address",
                           state.host + ":" + std::to_string(p.metrics_port), "--threads", std::to_string(threads),
                           "--data-plane-error-mode", error_mode, "--pool", g.pool,
                           "--peer-timeout-ms", std::to_string(peer_timeout_ms)},
                          env, p.log_file);
            p.start_time = process_start_time(p.pid);
            started.push_back(p);
        }
        // "prefill" | "decode" (default) → the service's role (prefill/decode disaggregation).
        auto role_of = [](const json& w) {
            const std::string role = w.value("role", "decode");
            if (role == "prefill") return std::string("attention_prefill");
            if (role == "decode") return std::string("attention_decode");
            throw std::runtime_error("attention worker " + w.value("name", std::string("?")) +
                                     ": role must be \"prefill\" or \"decode\", got \"" + role + "\"");
        };
        const std::string attention_binary = find_binary(opts.bin_dir, "longcat-attention", "attention").string();
        for (const auto& w : workers) {
            launched_process p;
            p.name = w.at("name").get<std::string>();
            p.role = "attention";
            p.binary = attention_binary;
            p.metrics_port = metrics_port();
            p.log_file = log_of(p.name);
            p.pid = spawn(p.binary,
                          {"--name", p.name, "--model", model_dir, "--coordinator", state.coordinator,
                           "--listen-host", state.host, "--metrics-address",
                           state.host + ":" + std::to_string(p.metrics_port), "--threads", std::to_string(threads),
                           "--tp-group", w.value("tp_group", "tp-0"), "--tp-rank", std::to_string(w.value("tp_rank", 0)),
                           "--tp-size", std::to_string(w.value("tp_size", 1)), "--micro-batches",
                           std::to_string(micro_batches), "--data-plane-error-mode", error_mode,
                           "--kv-pages", std::to_string(kv_pages), "--page-size", std::to_string(page_size),
                           "--role", role_of(w), "--peer-timeout-ms", std::to_string(peer_timeout_ms)},
                          env, p.log_file);
            p.start_time = process_start_time(p.pid);
            started.push_back(p);
        }
        // The OpenAI-compatible gateway (optional): its router talks to the coordinator over CAF.
        // Keys of the topology's "gateway" object other than "port" are passed as --key value.
        if (gateway) {
            const json& g = *gateway;
            launched_process p;
            p.name = string_field(g, "name", "gateway", "gateway.");
            p.role = "gateway";
            p.binary = find_binary(opts.bin_dir, "longcat-gateway", "gateway").string();
            p.metrics_port = metrics_port();
            p.control_port = fixed_gateway;
            if (p.control_port == 0) p.control_port = metrics_port();
            p.log_file = log_of(p.name);
            std::vector<std::string> args{"--model-dir", model_dir, "--coordinators", state.coordinator, "--host",
                                          state.host, "--port", std::to_string(p.control_port), "--metrics-address",
                                          state.host + ":" + std::to_string(p.metrics_port)};
            for (const auto& [key, value] : g.items()) {
                if (key == "port" || key == "name") continue;
                args.push_back("--" + key);
                args.push_back(value.is_string() ? value.get<std::string>() : value.dump());
            }
            p.pid = spawn(p.binary, args, env, p.log_file);
            state.gateway_url = "http://" + state.host + ":" + std::to_string(p.control_port);
            p.start_time = process_start_time(p.pid);
            started.push_back(p);
        }
        write_state(opts.state_file, state);

        // Wait until every part reports ready (the coordinator's /readyz means: serving).
        const auto until = std::chrono::steady_clock::now() + opts.ready_timeout;
        std::vector<bool> ready(started.size(), false);
        for (;;) {
            size_t num_ready = 0;
            for (size_t idx = 0; idx < started.size(); ++idx) {
                const auto& p = started[idx];
                int wstatus = 0;
                if (::waitpid(p.pid, &wstatus, WNOHANG) == p.pid) {
                    std::string why = WIFEXITED(wstatus) ? "exited with status " + std::to_string(WEXITSTATUS(wstatus))
                                                         : "was killed by signal " + std::to_string(WTERMSIG(wstatus));
                    const std::string error = p.name + " " + why + " while starting; its log (" + p.log_file +
                                              "):\n" + log_tail(p.log_file);
                    stop_processes(started, std::chrono::seconds(5), nullptr);
                    fs::remove(opts.state_file);
                    return failure(error);
                }
                if (!ready[idx])
                    ready[idx] = http_get_status(state.host, p.metrics_port, "/readyz",
                                                 std::chrono::milliseconds(500)) == 200;
                num_ready += ready[idx] ? 1 : 0;
            }
            if (num_ready == started.size()) break;
            if (std::chrono::steady_clock::now() >= until) {
                std::string error = "cluster not ready within " + std::to_string(opts.ready_timeout.count()) + " ms:";
                for (size_t idx = 0; idx < started.size(); ++idx) {
                    if (ready[idx]) continue;
                    std::string reason;
                    http_get_status(state.host, started[idx].metrics_port, "/readyz", std::chrono::milliseconds(500), &reason);
                    error += "\n  " + started[idx].name + ": " + (reason.empty() ? "no answer" : reason) +
                             "\n" + log_tail(started[idx].log_file, 5);
                }
                stop_processes(started, std::chrono::seconds(5), nullptr);
                fs::remove(opts.state_file);
                return failure(error);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        return state;
    } catch (const std::exception& e) {
        stop_processes(started, std::chrono::seconds(5), nullptr);
        return failure(e.what());
    }
}

proto::expected<std::vector<std::string>, std::string> cluster_down(const fs::path& state_file,
                                                                    std::chrono::milliseconds grace) {
    auto state = read_cluster_state(state_file);
    if (!state) return failure(state.error());
    std::vector<std::string> report;
    // The coordinator first: it stops admitting, lets running requests finish (its drain grace),
    // exits, and its members, seeing it stop cleanly, stop too; then whatever is left.
    // The gateway before all: it stops admitting and lets its streams finish first.
    std::vector<launched_process> gateway, members, coordinator;
    std::set<int> running;
    for (const auto& p : state->processes) {
        (p.role == "gateway" ? gateway : p.role == "coordinator" ? coordinator : members).push_back(p);
        if (is_our_process(p)) running.insert(p.pid);
    }
    stop_processes(gateway, grace, &report, &running);
    stop_processes(coordinator, grace, &report, &running);
    stop_processes(members, grace, &report, &running);
    std::error_code ec;
    fs::remove(state_file, ec);
    return report;
}

}  // namespace longcat::control
