// Appending JSON text to a std::string. Pure functions; any thread.
#pragma once

#include <string>
#include <string_view>

namespace mp::dict {

// Appends `s` as a JSON string literal, quotes included. '"' and '\\' are escaped, control
// bytes become \n, \r, \t, \b, \f or \u00XX; well-formed UTF-8 passes through unchanged. A
// byte that is not part of well-formed UTF-8 (a query can carry any byte through %XX)
// becomes \ufffd, so the output is always valid JSON.
void AppendJsonString(std::string& out, std::string_view s);

// {"error":"<message>"}
std::string JsonError(std::string_view message);

}  // namespace mp::dict
