// Every refusal of the plugin loader, against fixture plugins built to fail.
#include <catch2/catch.hpp>
#include <string>

#include "host/plugin_loader.h"

// The host's own version, as the refusal lines print it.
static const std::string kHostAbi =
    std::to_string(CG_ABI_MAJOR) + "." + std::to_string(CG_ABI_MINOR);

namespace {

std::string fixture(const char *name) { return std::string(CG_TEST_FIXTURE_DIR) + "/" + name; }

// Loads and returns the error line ("" when it loaded).
std::string refusal(const char *name) {
  cg::LoadedPlugin p;
  std::string error;
  const int rc = cg::plugin_load(fixture(name), &p, &error);
  if (rc == 0) return "";
  CHECK(rc == CG_EINVAL);
  CHECK(p.desc == nullptr);
  // One line that names the file.
  CHECK(error.find('\n') == std::string::npos);
  CHECK(error.find(fixture(name)) != std::string::npos);
  return error;
}

}  // namespace

TEST_CASE("loader accepts a well-formed plugin and reads its schema", "[loader]") {
  cg::LoadedPlugin p;
  std::string error;
  REQUIRE(cg::plugin_load(fixture("good.so"), &p, &error) == 0);
  CHECK(error.empty());
  CHECK(std::string(p.desc->name) == "fixture");
  CHECK(p.desc->kind == CG_KIND_CHANNEL);
  REQUIRE(p.fields.size() == 2);
  CHECK(std::string(p.fields[0]->key) == "token");
  CHECK(std::string(p.fields[1]->key) == "retries");
}

TEST_CASE("loader refuses a file that is not a shared object", "[loader]") {
  const auto e = refusal("not_elf.so");
  CHECK_THAT(e, Catch::Contains("cannot load"));
  CHECK_THAT(e, Catch::Contains("expected a shared object"));
}

TEST_CASE("loader refuses a missing file", "[loader]") {
  CHECK_THAT(refusal("does_not_exist.so"), Catch::Contains("cannot load"));
}

TEST_CASE("loader refuses a plugin with unresolved symbols", "[loader]") {
  const auto e = refusal("unresolved.so");
  CHECK_THAT(e, Catch::Contains("cg_fixture_symbol_that_does_not_exist"));
}

TEST_CASE("loader refuses a shared object without the entry symbol", "[loader]") {
  const auto e = refusal("no_entry.so");
  CHECK_THAT(e, Catch::Contains("expected the symbol cg_plugin_entry, found none"));
}

TEST_CASE("loader reports a plugin that declines the host's version offer", "[loader]") {
  const auto e = refusal("declines.so");
  CHECK_THAT(e, Catch::Contains("offered ABI " + kHostAbi));
  CHECK_THAT(e, Catch::Contains("returned NULL"));
}

TEST_CASE("loader refuses another ABI major", "[loader]") {
  CHECK_THAT(refusal("wrong_major.so"),
             Catch::Contains("ABI major mismatch: expected 1.x, found 2.0"));
}

TEST_CASE("loader refuses a plugin built for a newer minor", "[loader]") {
  CHECK_THAT(refusal("newer_minor.so"),
             Catch::Contains("newer ABI: expected " + kHostAbi + " or older, found 1.99"));
}

TEST_CASE("loader refuses a descriptor smaller than ABI 1.0's", "[loader]") {
  CHECK_THAT(refusal("small_descriptor.so"),
             Catch::Contains("descriptor too small") && Catch::Contains("found 8"));
}

TEST_CASE("loader reports a small descriptor of another major as a major mismatch", "[loader]") {
  // 12 bytes cover struct_size, abi_major and abi_minor.
  CHECK_THAT(refusal("small_wrong_major.so"),
             Catch::Contains("ABI major mismatch: expected 1.x, found 2.0"));
  // 8 bytes cover the major only: the minor is not read.
  CHECK_THAT(refusal("major_only_wrong_major.so"),
             Catch::Contains("ABI major mismatch: expected 1.x, found 2.x") &&
                 Catch::Contains("8-byte descriptor, no minor"));
}

TEST_CASE("loader reports a small descriptor of a newer minor as such", "[loader]") {
  CHECK_THAT(refusal("small_newer_minor.so"),
             Catch::Contains("newer ABI: expected " + kHostAbi + " or older, found 1.99"));
}

TEST_CASE("loader never reads version fields beyond struct_size", "[loader]") {
  // The fixture's abi_major is 2, but 4 bytes do not cover it.
  const auto e = refusal("tiny_wrong_major.so");
  CHECK_THAT(
      e, Catch::Contains("descriptor too small: expected at least") && Catch::Contains("found 4"));
  CHECK_THAT(e, !Catch::Contains("mismatch"));
}

TEST_CASE("loader refuses an ops table smaller than ABI 1.0's", "[loader]") {
  CHECK_THAT(refusal("small_ops.so"),
             Catch::Contains("channel ops table too small: expected at least 16 bytes, found 4"));
}

TEST_CASE("loader refuses an ops table with a NULL 1.0 function", "[loader]") {
  CHECK_THAT(refusal("null_op.so"),
             Catch::Contains("channel ops table incomplete: expected every 1.0 function") &&
                 Catch::Contains("found send = NULL"));
}

TEST_CASE("loader refuses a NULL lifecycle hook", "[loader]") {
  CHECK_THAT(refusal("null_hook.so"),
             Catch::Contains("missing lifecycle hook: expected init, start, stop and destroy") &&
                 Catch::Contains("found stop = NULL"));
}

TEST_CASE("loader refuses a bad plugin name", "[loader]") {
  // The newline in the name is escaped, so the refusal stays one line.
  CHECK_THAT(refusal("bad_name.so"),
             Catch::Contains("bad plugin name: expected [a-z0-9_-]+, found \"Fixture\\nv2\""));
  CHECK_THAT(refusal("null_name.so"),
             Catch::Contains("bad plugin name: expected [a-z0-9_-]+, found NULL"));
}

TEST_CASE("loader refuses a NULL version string", "[loader]") {
  CHECK_THAT(refusal("null_version.so"),
             Catch::Contains("missing version string: expected e.g. \"1.0.0\", found NULL"));
}

TEST_CASE("loader refuses an unknown plugin kind", "[loader]") {
  CHECK_THAT(refusal("unknown_kind.so"),
             Catch::Contains("unknown plugin kind") && Catch::Contains("found 99"));
}

TEST_CASE("plugin_kind_name names every kind", "[loader]") {
  CHECK(cg::plugin_kind_name(CG_KIND_CHANNEL) == "channel");
  CHECK(cg::plugin_kind_name(CG_KIND_MODEL) == "model");
  CHECK(cg::plugin_kind_name(CG_KIND_CACHE) == "cache");
  CHECK(cg::plugin_kind_name(7) == "unknown");
}
