// SPDX-License-Identifier: Apache-2.0
// Small string helpers that several layers need: case folding for names compared without
// regard to case, and lists joined for messages.
#pragma once

#include <algorithm>
#include <cctype>
#include <span>
#include <string>
#include <string_view>

namespace estimator {

// ASCII lower case; bytes outside A-Z are kept as they are (no locale).
inline std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

// The items with `separator` between them; empty for no items. Takes strings or views.
template <typename T>
std::string join(std::span<const T> items, std::string_view separator) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += separator;
    out += std::string_view(items[i]);
  }
  return out;
}

inline std::string join(std::span<const std::string> items, std::string_view separator) {
  return join<std::string>(items, separator);
}
inline std::string join(std::span<const std::string_view> items, std::string_view separator) {
  return join<std::string_view>(items, separator);
}

}  // namespace estimator
