#include "base/version.h"

namespace cg {
namespace {

std::string &version() {
  static std::string v = CHATGATE_VERSION;
  return v;
}

}  // namespace

const std::string &build_version() { return version(); }

void build_version_tag(std::string_view tag) { version() = std::string(CHATGATE_VERSION) += tag; }

}  // namespace cg
