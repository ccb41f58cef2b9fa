// expect_model_error: runs `fn` and expects a model::model_error whose message contains every
// needle (the file, the tensor, the field...); a missing error or needle fails the test.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "model/error.hpp"

namespace longcat::testing {

template <class Fn>
void expect_model_error(Fn fn, const std::vector<std::string>& needles) {
    try {
        fn();
        ADD_FAILURE() << "no error";
    } catch (const model::model_error& e) {
        const std::string msg = e.what();
        for (const std::string& needle : needles)
            EXPECT_NE(msg.find(needle), std::string::npos) << "missing `" << needle << "` in: " << msg;
    }
}

}  // namespace longcat::testing
