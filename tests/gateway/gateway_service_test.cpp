// longcat-gateway as a process, and its config layers: SIGTERM while a stream is in flight
// through a real local cluster (new requests 503, the stream finishes with the single-process
// engine's tokens, exit 0), config errors that
// name the option and its layer (exit 2), file → command line → environment precedence.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "actors/control/launcher.hpp"
#include "actors/gateway/gateway_config.hpp"
#include "tests/gateway/gateway_fixture.hpp"

extern char** environ;

namespace longcat::gateway {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

// A child process with stdout/stderr in files; killed (SIGKILL) if still running at the end.
class child_process {
public:
    child_process(const std::vector<std::string>& args, const std::filesystem::path& dir,
                  const std::vector<std::string>& extra_env = {})
        : out_(dir / "stdout.txt"), err_(dir / "stderr.txt") {
        std::vector<char*> argv;
        argv.push_back(const_cast<char*>(LONGCAT_GATEWAY_PATH));
        for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
        argv.push_back(nullptr);
        std::vector<std::string> env_storage(extra_env);
        for (char** entry = environ; *entry; ++entry) env_storage.emplace_back(*entry);
        std::vector<char*> envp;
        for (std::string& entry : env_storage) envp.push_back(entry.data());
        envp.push_back(nullptr);
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 1, out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        posix_spawn_file_actions_addopen(&actions, 2, err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (posix_spawn(&pid_, LONGCAT_GATEWAY_PATH, &actions, nullptr, argv.data(), envp.data()) != 0) pid_ = -1;
        posix_spawn_file_actions_destroy(&actions);
    }
    ~child_process() {
        if (pid_ > 0 && !exited_) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    pid_t pid() const { return pid_; }
    // The exit code, or -1 when it did not exit within `timeout` (or died by a signal).
    int wait_exit(std::chrono::milliseconds timeout) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            int status = 0;
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                exited_ = true;
                return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
            }
            std::this_thread::sleep_for(10ms);
        }
        return -1;
    }
    bool running() {
        if (exited_) return false;
        int status = 0;
        if (::waitpid(pid_, &status, WNOHANG) == pid_) exited_ = true;
        return !exited_;
    }
    std::string out() const { return read_file(out_); }
    std::string err() const { return read_file(err_); }

private:
    std::filesystem::path out_, err_;
    pid_t pid_ = -1;
    bool exited_ = false;
};

// The "data: " payloads in a raw HTTP/1.1 chunked response (each chunk holds whole events).
std::vector<std::string> raw_sse_events(const std::string& raw) {
    std::vector<std::string> events;
    std::istringstream lines(raw);
    for (std::string line; std::getline(lines, line);) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.starts_with("data: ")) events.push_back(line.substr(6));
    }
    return events;
}

TEST(GatewayService, SigtermDrainsTheStreamInFlightAndExitsZero) {
    // A real local cluster (deploy/local/minimal.json: coordinator, attention worker, expert
    // group as processes) with longcat-gateway in front, started by the launcher.
    longcat::testing::temp_dir dir;
    std::ifstream topology_in(std::string(LONGCAT_SOURCE_DIR) + "/deploy/local/minimal.json");
    json topology = json::parse(topology_in);
    topology["gateway"] = {{"served-model-name", "tiny"}, {"drain-grace-ms", 20000}};
    const std::filesystem::path topology_file = dir.path() / "topology.json";
    std::ofstream(topology_file) << topology.dump(2);
    control::cluster_up_options up;
    up.topology = topology_file;
    up.model_dir = fixture::shared_tiny_model().dir;
    up.state_file = dir.path() / "cluster" / "state.json";
    up.bin_dir = std::filesystem::path(LONGCAT_CLI_PATH).parent_path().parent_path();
    auto state = control::cluster_up(up);
    ASSERT_TRUE(state.has_value()) << state.error();
    struct down_guard {
        std::filesystem::path file;
        ~down_guard() { (void)control::cluster_down(file); }
    } guard{up.state_file};
    const control::launched_process* gateway = nullptr;
    for (const auto& p : state->processes)
        if (p.role == "gateway") gateway = &p;
    ASSERT_NE(gateway, nullptr);
    const uint16_t port = gateway->control_port;
    EXPECT_EQ(state->gateway_url, "http://127.0.0.1:" + std::to_string(port));
    EXPECT_NE(read_file(gateway->log_file).find("longcat-gateway effective config:"), std::string::npos);
    EXPECT_NE(read_file(gateway->log_file).find("drain-grace-ms = 20000   (command line)"), std::string::npos)
        << read_file(gateway->log_file);

    const std::string user = "Stream through the shutdown";
    const int64_t max_tokens = 300;
    const std::vector<int32_t> reference = fixture::reference_generate(fixture::chat_prompt_ids(user), max_tokens);
    const json request = {{"model", "tiny"}, {"messages", json::array({{{"role", "user"}, {"content", user}}})},
                          {"max_tokens", max_tokens}, {"temperature", 0}, {"stream", true}};
    const std::string body = request.dump();
    fixture::raw_client client(port);
    ASSERT_TRUE(client.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: " +
                            std::to_string(body.size()) + "\r\n\r\n" + body));
    const std::string started = client.receive_until(
        [](const std::string& r) { return r.find("\"content\":\"") != std::string::npos; }, 30s);
    ASSERT_NE(started.find("HTTP/1.1 200"), std::string::npos) << started;

    ASSERT_EQ(::kill(gateway->pid, SIGTERM), 0);
    ASSERT_TRUE(fixture::eventually(
        [&] { return read_file(gateway->log_file).find("stopping (SIGTERM)") != std::string::npos; }));
    const fixture::http_reply refused =
        fixture::http_call("POST", "http://127.0.0.1:" + std::to_string(port) + "/v1/completions",
                           R"({"model":"tiny","prompt":"x","max_tokens":2})");
    EXPECT_EQ(refused.status, 503) << refused.body;
    EXPECT_NE(refused.body.find("draining"), std::string::npos);

    const std::string raw = client.receive_until(
        [](const std::string& r) { return r.find("data: [DONE]") != std::string::npos; }, 60s);
    std::string text, finish_reason;
    for (const std::string& event : raw_sse_events(raw)) {
        if (event == "[DONE]") break;
        const json chunk = json::parse(event);
        ASSERT_FALSE(chunk.contains("error")) << event;
        const json& choice = chunk["choices"][0];
        if (choice["delta"].contains("content")) text += choice["delta"]["content"].get<std::string>();
        if (!choice["finish_reason"].is_null()) finish_reason = choice["finish_reason"];
    }
    EXPECT_EQ(text, fixture::decode(reference));
    EXPECT_FALSE(finish_reason.empty());
    int status = 0;
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (::waitpid(gateway->pid, &status, WNOHANG) != gateway->pid) {
        ASSERT_LT(std::chrono::steady_clock::now(), until) << "the gateway did not exit";
        std::this_thread::sleep_for(20ms);
    }
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << read_file(gateway->log_file);
    const std::string err = read_file(gateway->log_file);
    EXPECT_NE(err.find("draining 1 request(s)"), std::string::npos) << err;
    EXPECT_NE(err.find("drained"), std::string::npos) << err;
}

TEST(GatewayService, ConfigErrorsNameTheOptionAndExitTwo) {
    longcat::testing::temp_dir dir;
    const std::string model_dir = fixture::shared_tiny_model().dir.string();
    struct bad {
        std::vector<std::string> args;
        std::vector<std::string> env;
        std::vector<std::string> needles;
    };
    for (const bad& b : std::vector<bad>{
             {{"--model-dir", model_dir, "--port", "eighty"}, {}, {"port must be an integer", "command line"}},
             {{"--model-dir", model_dir}, {"LONGCAT_GATEWAY_IO_THREADS=many"}, {"io-threads", "LONGCAT_GATEWAY_IO_THREADS"}},
             {{"--model-dir", model_dir, "--port", "70000"}, {}, {"port must be in [0, 65535]"}},
             {{"--model-dir", model_dir}, {}, {"coordinators must name at least one coordinator"}},
             {{"--model-dir", model_dir, "--coordinators", "127.0.0.1:1,nonsense"}, {}, {"\"nonsense\" is not HOST:PORT"}},
             {{"--port", "0", "--coordinators", "127.0.0.1:1"}, {}, {"model_dir must be set"}},
             {{"--model-dir", model_dir, "--no-such-option", "1"}, {}, {"unknown option \"no-such-option\""}},
             {{"--model-dir", model_dir, "--coordinators", "127.0.0.1:1", "--api-keys-file", "/nonexistent/keys"}, {}, {"api_keys_file: cannot read"}},
             {{"--model-dir", model_dir, "--coordinators", "127.0.0.1:1", "--max-model-len", "999999"}, {}, {"max_position_embeddings"}}}) {
        child_process gateway(b.args, dir.path(), b.env);
        EXPECT_EQ(gateway.wait_exit(30s), 2) << gateway.err();
        for (const std::string& needle : b.needles)
            EXPECT_NE(gateway.err().find(needle), std::string::npos) << "missing `" << needle << "` in " << gateway.err();
    }
    child_process help({"--help"}, dir.path());
    EXPECT_EQ(help.wait_exit(30s), 0);
    EXPECT_NE(help.out().find("--drain-grace-ms"), std::string::npos);
}

TEST(GatewayConfig, FileThenCommandLineThenEnvironment) {
    longcat::testing::temp_dir dir;
    const std::filesystem::path file = dir.path() / "gateway.json";
    std::ofstream(file) << R"({"port": 9000, "io_threads": 4, "api_keys": ["a", "b"], "max-tokens-limit": 100,
                              "model_dir": "/models/x", "coordinators": "127.0.0.1:7000, 10.0.0.2:7001"})";
    const std::filesystem::path keys = dir.path() / "keys.txt";
    std::ofstream(keys) << "# comment\nc\n\n  d  \n";
    gateway_config config;
    gateway_options options(config);
    const auto env = [](const std::string& name) -> std::optional<std::string> {
        if (name == "LONGCAT_GATEWAY_IO_THREADS") return "3";
        return std::nullopt;
    };
    auto parsed = options.parse({"--config", file.string(), "--port", "9001", "--api-keys-file=" + keys.string()}, env);
    ASSERT_TRUE(parsed.has_value()) << parsed.error();
    EXPECT_TRUE(*parsed);
    EXPECT_EQ(config.port, 9001);        // command line over file
    EXPECT_EQ(config.io_threads, 3);     // environment over file
    EXPECT_EQ(config.max_tokens_limit, 100);
    EXPECT_EQ(config.model_dir, "/models/x");
    EXPECT_EQ(config.host, "127.0.0.1");  // default
    EXPECT_FALSE(config.validate().has_value()) << *config.validate();
    EXPECT_EQ(config.coordinator_list(), (std::vector<std::string>{"127.0.0.1:7000", "10.0.0.2:7001"}));
    const auto api_keys = config.load_api_keys();
    ASSERT_TRUE(api_keys.has_value());
    EXPECT_EQ(*api_keys, (std::vector<std::string>{"a", "b", "c", "d"}));
    const std::string printed = options.print();
    EXPECT_NE(printed.find("port = 9001   (command line)"), std::string::npos) << printed;
    EXPECT_NE(printed.find("io-threads = 3   (environment LONGCAT_GATEWAY_IO_THREADS)"), std::string::npos) << printed;
    EXPECT_NE(printed.find("max-tokens-limit = 100   (file "), std::string::npos) << printed;
    EXPECT_NE(printed.find("api-keys = <set, hidden>"), std::string::npos) << printed;
    EXPECT_EQ(printed.find("a,b"), std::string::npos) << printed;

    gateway_config other;
    gateway_options bad_file(other);
    std::ofstream(file) << R"({"port": "x"})";
    auto error = bad_file.parse({"--config", file.string()}, env);
    ASSERT_FALSE(error.has_value());
    EXPECT_NE(error.error().find("port must be an integer"), std::string::npos) << error.error();
    EXPECT_NE(error.error().find("file " + file.string()), std::string::npos) << error.error();
    EXPECT_FALSE(gateway_options(other).parse({"--port"}, env).has_value());  // no value
    EXPECT_FALSE(gateway_options(other).parse({"stray"}, env).has_value());
    EXPECT_FALSE(*gateway_options(other).parse({"--help"}, env));

    // Keys asked for and none found would turn authentication off: refused, naming the source.
    gateway_config empty_file;
    std::ofstream(keys) << "# only a comment\n\n   \n";
    empty_file.api_keys_file = keys.string();
    auto none = empty_file.load_api_keys();
    ASSERT_FALSE(none.has_value()) << "an empty key file turned authentication off";
    EXPECT_NE(none.error().find(keys.string() + " holds no key"), std::string::npos)
        << none.error();
    gateway_config commas;
    commas.api_keys = " , ,";
    none = commas.load_api_keys();
    ASSERT_FALSE(none.has_value()) << "a list of commas turned authentication off";
    EXPECT_NE(none.error().find("holds no key"), std::string::npos) << none.error();
    EXPECT_TRUE(gateway_config{}.load_api_keys().has_value());  // none asked for: no auth
}

}  // namespace
}  // namespace longcat::gateway
