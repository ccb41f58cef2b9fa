// model_error: the one exception type model/ throws for bad files and bad input.
// The message always names what was wrong: the file, and the tensor, field or JSON path.
#pragma once

#include <stdexcept>
#include <string>

namespace longcat::model {

class model_error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

}  // namespace longcat::model
