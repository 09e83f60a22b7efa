// The admin page's files, compiled into the binary (core/admin_ui/ and
// Debian's Chart.js; see core/embed_assets.cmake): no CDN, nothing read from
// disk at run time.
//
// THREAD: any (constant data).
#pragma once

#include <span>
#include <string_view>

namespace cg {

struct AdminAsset {
  const char *name;  // "index.html", served as /admin/<name>
  const char *begin;
  const char *end;
  std::string_view data() const { return {begin, static_cast<size_t>(end - begin)}; }
};

std::span<const AdminAsset> admin_assets();

}  // namespace cg
