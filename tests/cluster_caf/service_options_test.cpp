// service_options: defaults < file < command line < environment, each option declared once.
#include "actors/control/service_options.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "tests/support/temp_dir.hpp"

namespace longcat::control {
namespace {

struct sample_config {
    std::string name = "svc";
    int64_t max_batch = 8;
    uint16_t port = 0;
    bool verbose = false;
    void declare(service_options& o) {
        o.add("name", &name, "name");
        o.add("max-batch", &max_batch, "batch");
        o.add("port", &port, "port");
        o.add("verbose", &verbose, "verbose");
    }
};

TEST(ServiceOptions, LayersApplyInOrderAndPrintTheirSource) {
    testing::temp_dir dir;
    const auto file = dir.path() / "c.json";
    std::ofstream(file) << R"({"name": "from-file", "max-batch": 4, "port": 7000})";
    sample_config config;
    service_options options("sample");
    config.declare(options);
    ::setenv("LONGCAT_SAMPLE_MAX_BATCH", "3", 1);
    options.apply_file(file.string());
    options.apply_args({"--max-batch", "5", "--verbose=true"});
    options.apply_environment();
    ::unsetenv("LONGCAT_SAMPLE_MAX_BATCH");
    EXPECT_EQ(config.name, "from-file");
    EXPECT_EQ(config.max_batch, 3);  // environment wins
    EXPECT_EQ(config.port, 7000);
    EXPECT_TRUE(config.verbose);
    const std::string printed = options.print();
    EXPECT_NE(printed.find("max-batch = 3   (environment)"), std::string::npos) << printed;
    EXPECT_NE(printed.find("verbose = true   (command line)"), std::string::npos) << printed;
    EXPECT_EQ(options.env_name("max-batch"), "LONGCAT_SAMPLE_MAX_BATCH");
}

TEST(ServiceOptions, RejectsUnknownOptionsAndBadValuesByName) {
    sample_config config;
    service_options options("sample");
    config.declare(options);
    EXPECT_THROW(options.apply_args({"--nope", "1"}), config_error);
    try {
        options.apply_args({"--port", "70000"});
        FAIL() << "accepted port 70000";
    } catch (const config_error& e) {
        EXPECT_NE(std::string(e.what()).find("port"), std::string::npos) << e.what();
    }
    EXPECT_THROW(options.apply_args({"--verbose", "maybe"}), config_error);
}

}  // namespace
}  // namespace longcat::control
