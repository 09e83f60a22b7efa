// The version this build reports (--version, the ready line, the admin
// page, chatgate_build_info): the project's, plus the tag a test build of
// the binary sets (tests/integration builds chatgate-next, "+next", to be
// a second build an upgrade can go to and the tests can tell apart).
//
// THREAD: set once at start (main), before any other thread; read anywhere.
#pragma once

#include <string>
#include <string_view>

namespace cg {

const std::string &build_version();
void build_version_tag(std::string_view tag);

}  // namespace cg
