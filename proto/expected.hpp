// expected<T, E>: a value or an error, the boundary type of proto/ and actors/transport/.
// A subset of C++23's std::expected (construct from a T or from unexpected<E>, has_value,
// value, error, operator*, operator->), so moving to std::expected is a rename.
// NOTES: value() on an error and error() on a value are programming errors (asserted).
#pragma once

#include <cassert>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>

namespace longcat::proto {

template <class E>
class unexpected {
  public:
    explicit unexpected(E error) : error_(std::move(error)) {}
    E& error() & { return error_; }
    E&& error() && { return std::move(error_); }
    const E& error() const& { return error_; }

  private:
    E error_;
};

template <class T, class E>
class [[nodiscard]] expected {
  public:
    expected() requires std::is_default_constructible_v<T> : state_(std::in_place_index<0>) {}
    expected(T value) : state_(std::in_place_index<0>, std::move(value)) {}  // NOLINT
    expected(unexpected<E> error)                                            // NOLINT
        : state_(std::in_place_index<1>, std::move(error).error()) {}

    bool has_value() const { return state_.index() == 0; }
    explicit operator bool() const { return has_value(); }

    T& value() & {
        assert(has_value());
        return std::get<0>(state_);
    }
    const T& value() const& {
        assert(has_value());
        return std::get<0>(state_);
    }
    T&& value() && {
        assert(has_value());
        return std::get<0>(std::move(state_));
    }
    const E& error() const& {
        assert(!has_value());
        return std::get<1>(state_);
    }
    E&& error() && {
        assert(!has_value());
        return std::get<1>(std::move(state_));
    }

    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

  private:
    std::variant<T, E> state_;
};

// expected<void, E>: success carries nothing.
template <class E>
class [[nodiscard]] expected<void, E> {
  public:
    expected() = default;
    expected(unexpected<E> error) : error_(std::move(error).error()) {}  // NOLINT

    bool has_value() const { return !error_.has_value(); }
    explicit operator bool() const { return has_value(); }
    void value() const { assert(has_value()); }
    const E& error() const& {
        assert(!has_value());
        return *error_;
    }
    E&& error() && {
        assert(!has_value());
        return std::move(*error_);
    }

  private:
    std::optional<E> error_;
};

}  // namespace longcat::proto
