// proto/messages: the CAF catalogue. A registered `hello` survives CAF's binary serialization as
// a type-erased message (what the middleman does between processes); check_hello names both
// sides on a mismatch.
#include "proto/messages.hpp"

#include <gtest/gtest.h>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/binary_deserializer.hpp>
#include <caf/binary_serializer.hpp>
#include <caf/message.hpp>

namespace longcat::proto {
namespace {

TEST(Messages, HelloCarriesThisProcessVersions) {
    const hello message = make_hello(node_role::expert_group, "experts-3", "ucx://127.0.0.1:4200");
    EXPECT_EQ(message.protocol_version, kProtocolVersion);
    EXPECT_EQ(versions_of(message), local_wire_versions());
    EXPECT_EQ(message.role, node_role::expert_group);
}

TEST(Messages, HelloRoundTripsThroughCafSerialization) {
    caf::actor_system_config config;
    register_message_types(config);
    caf::actor_system system{config};
    const hello sent = make_hello(node_role::attention_decode, "attention-1", "ucx://127.0.0.1:9");
    std::vector<char> buffer;
    {
        caf::binary_serializer sink{system, buffer};
        caf::message message = caf::make_message(sent);
        auto error = sink(message);
        ASSERT_FALSE(error) << system.render(error);
    }
    caf::message received;
    {
        caf::binary_deserializer source{system, buffer};
        auto error = source(received);
        ASSERT_FALSE(error) << system.render(error);
    }
    ASSERT_TRUE(received.match_elements<hello>()) << caf::to_string(received);
    EXPECT_EQ(received.get_as<hello>(0), sent);
}

TEST(Messages, CheckHelloNamesBothSides) {
    hello ours = make_hello(node_role::coordinator, "coordinator", "");
    hello theirs = make_hello(node_role::expert_group, "experts-0", "ucx://127.0.0.1:1");
    EXPECT_FALSE(check_hello(ours, theirs).has_value());
    theirs.protocol_version = kProtocolVersion + 1;
    auto mismatch = check_hello(ours, theirs);
    ASSERT_TRUE(mismatch.has_value());
    EXPECT_NE(mismatch->find("coordinator (coordinator) speaks protocol"), std::string::npos)
        << *mismatch;
    EXPECT_NE(mismatch->find("experts-0 (expert_group) speaks protocol " +
                             std::to_string(kProtocolVersion + 1)),
              std::string::npos)
        << *mismatch;
}

TEST(Messages, RolesRoundTripAsText) {
    for (node_role role : {node_role::gateway, node_role::coordinator, node_role::attention_prefill,
                           node_role::attention_decode, node_role::expert_group}) {
        EXPECT_EQ(parse_node_role(to_string(role)), role);
    }
    EXPECT_FALSE(parse_node_role("router").has_value());
}

}  // namespace
}  // namespace longcat::proto
