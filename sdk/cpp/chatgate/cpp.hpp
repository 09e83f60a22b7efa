// Optional header-only C++ helpers over the C ABI. Nothing here crosses the
// boundary: they only convert between cg_str_t and std::string_view.
//
// THREAD: safe (pure functions).
#ifndef CHATGATE_CPP_HPP
#define CHATGATE_CPP_HPP

#include <chatgate/common.h>

#include <string_view>

namespace chatgate {

// A cg_str_t as a string_view (empty for a NULL view). OWNERSHIP: borrows.
inline std::string_view view(cg_str_t s) noexcept {
  return s.ptr != nullptr ? std::string_view(s.ptr, s.len) : std::string_view();
}

// A string_view as a cg_str_t. OWNERSHIP: borrows; keep the source alive.
inline cg_str_t str(std::string_view s) noexcept { return cg_str_t{s.data(), s.size()}; }

}  // namespace chatgate

#endif  // CHATGATE_CPP_HPP
