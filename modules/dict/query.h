// Query-string parameters of a dict call: percent-decoding and the `limit` parameter.
// Pure functions; any thread.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace mp::dict {

// Decodes an application/x-www-form-urlencoded value: "%XX" (hex, either case) becomes that
// byte, '+' becomes a space. Returns nullopt for a '%' not followed by two hex digits.
std::optional<std::string> PercentDecode(std::string_view raw);

inline constexpr size_t kDefaultLimit = 10;
inline constexpr size_t kMaxLimit = 1000;

// The value of `limit`: absent -> kDefaultLimit; decimal digits -> that number, capped at
// kMaxLimit; anything else (empty, sign, letters) -> nullopt.
std::optional<size_t> ParseLimit(std::optional<std::string_view> decoded);

}  // namespace mp::dict
