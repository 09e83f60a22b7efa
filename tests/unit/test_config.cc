// Unit tests for core/config/config.cc and core/config/config_schema.cc: the embedded
// default config, ${VAR} expansion, core validation errors (file, line, key
// path, message), and plugin schema validation and help.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "config/config.h"
#include "config/config_schema.h"

using cg::Config;
using cg::ConfigError;

namespace {

// Sets (or unsets, with nullptr) an environment variable for one scope.
class EnvGuard {
 public:
  EnvGuard(const char *name, const char *value) : name_(name) {
    if (const char *old = std::getenv(name)) old_ = old;
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~EnvGuard() {
    if (old_) {
      setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

std::string read_text(const std::string &path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A valid plugins + router tail; tests put the part under test first so its
// line numbers are fixed.
const std::string kTail = R"(plugins:
  dir: /opt/cg
  instances:
    - name: echo
      plugin: echo.so
    - name: memory
      plugin: memory.so
router:
  model: echo
  cache: memory
)";

std::optional<ConfigError> load(const std::string &head, Config *cfg) {
  return cg::config_load_string(head + kTail, "test.yaml", cfg);
}

// Loads a document that must fail and returns its error.
ConfigError load_error(const std::string &yaml) {
  Config cfg;
  auto err = cg::config_load_string(yaml, "test.yaml", &cfg);
  REQUIRE(err.has_value());
  return *err;
}

}  // namespace

TEST_CASE("config: the embedded default file parses", "[config]") {
  EnvGuard level("CHATGATE_LOG_LEVEL", nullptr);
  EnvGuard port("CHATGATE_API_PORT", nullptr);
  EnvGuard dir("CHATGATE_PLUGIN_DIR", nullptr);
  Config cfg;
  auto err = cg::config_load_string(read_text(CG_TEST_SOURCE_DIR "/config/chatgate.yaml"),
                                    "chatgate.yaml", &cfg);
  INFO((err ? err->to_string() : ""));
  REQUIRE_FALSE(err);
  CHECK(cfg.file == "chatgate.yaml");
  CHECK(cfg.logging.level == "info");
  CHECK(cfg.logging.file.empty());
  CHECK(cfg.api.name == "api");
  CHECK(cfg.api.address == "127.0.0.1");
  CHECK(cfg.api.port == 8080);
  CHECK(cfg.api.limits.max_header_bytes == 16384);
  CHECK(cfg.api.cors.allowed_origins.empty());
  CHECK(cfg.api.cors.allowed_methods == std::vector<std::string>{"GET", "POST", "OPTIONS"});
  CHECK(cfg.plugin_dir == cg::config_default_plugin_dir());
  REQUIRE(cfg.plugins.size() == 2);
  CHECK(cfg.plugins[0].name == "echo");
  CHECK(cfg.plugins[0].path == cfg.plugin_dir + "/echo.so");
  CHECK(cg::config_plugin_section(cfg.plugins[1])["maxBytes"].Scalar() == "67108864");
  CHECK(cfg.router.model == "echo");
  CHECK(cfg.router.cache == "memory");
  CHECK(cfg.shutdown_deadline_ms == 10000);
}

TEST_CASE("config: the default file takes its values from the environment", "[config]") {
  EnvGuard level("CHATGATE_LOG_LEVEL", "debug");
  EnvGuard port("CHATGATE_API_PORT", "9090");
  EnvGuard dir("CHATGATE_PLUGIN_DIR", "/opt/x/");
  Config cfg;
  REQUIRE_FALSE(cg::config_load_file(CG_TEST_SOURCE_DIR "/config/chatgate.yaml", &cfg));
  CHECK(cfg.logging.level == "debug");
  CHECK(cfg.api.port == 9090);
  CHECK(cfg.plugin_dir == "/opt/x/");
  CHECK(cfg.plugins[1].path == "/opt/x/memory.so");
}

TEST_CASE("config: ${VAR} expansion", "[config][env]") {
  EnvGuard set("CG_T_SET", "v1");
  EnvGuard empty("CG_T_EMPTY", "");
  EnvGuard unset("CG_T_UNSET", nullptr);
  std::string error;
  auto expand = [&](std::string_view text) { return cg::config_expand_env(text, &error); };

  CHECK(expand("a${CG_T_SET}b${CG_T_SET}") == "av1bv1");
  CHECK(expand("${CG_T_UNSET:-dflt}") == "dflt");
  CHECK(expand("${CG_T_UNSET:-}") == "");
  CHECK(expand("${CG_T_EMPTY:-dflt}") == "dflt");  // like the shell: empty takes the default
  CHECK(expand("${CG_T_EMPTY}") == "");
  CHECK(expand("${CG_T_SET:-dflt}") == "v1");
  CHECK(expand("$${CG_T_SET}") == "${CG_T_SET}");
  CHECK(expand("cost $5, $$ and $") == "cost $5, $$ and $");

  CHECK_FALSE(expand("x${CG_T_UNSET}"));
  CHECK(error == "environment variable CG_T_UNSET is not set");
  CHECK_FALSE(expand("${CG_T_SET"));
  CHECK(error.find("unterminated") != std::string::npos);
  CHECK_FALSE(expand("${1BAD}"));
  CHECK(error.find("invalid variable reference") != std::string::npos);
  CHECK_FALSE(expand("${}"));
}

TEST_CASE("config: env expansion happens before type conversion", "[config][env]") {
  EnvGuard port("CG_T_PORT", "7070");
  EnvGuard secret("CG_T_UNSET_SECRET", nullptr);
  Config cfg;
  REQUIRE_FALSE(load("listeners:\n  api:\n    port: ${CG_T_PORT:-8080}\n", &cfg));
  CHECK(cfg.api.port == 7070);

  auto err = load_error("logging:\n  file: /var/log/${CG_T_UNSET_SECRET}\n" + kTail);
  CHECK(err.line == 2);
  CHECK(err.key == "logging.file");
  CHECK(err.message == "environment variable CG_T_UNSET_SECRET is not set");
}

TEST_CASE("config: unknown keys name line, path and the valid keys", "[config]") {
  auto err = load_error("listeners:\n  api:\n    address: 127.0.0.1\n    prot: 80\n" + kTail);
  CHECK(err.file == "test.yaml");
  CHECK(err.line == 4);
  CHECK(err.key == "listeners.api.prot");
  CHECK(err.message.rfind("unknown key 'prot' (expected one of: address, port, ", 0) == 0);
  CHECK(err.to_string().rfind("test.yaml:4: listeners.api.prot: unknown key 'prot'", 0) == 0);

  err = load_error("shutdown:\n  deadlineMs: 5\nloging: {}\n" + kTail);
  CHECK(err.line == 3);
  CHECK(err.key == "loging");

  err = load_error(kTail + "  extra: 1\n");  // under router
  CHECK(err.line == 11);
  CHECK(err.key == "router.extra");
}

TEST_CASE("config: duplicate keys are errors", "[config]") {
  auto err = load_error("logging:\n  level: info\n  level: debug\n" + kTail);
  CHECK(err.line == 3);
  CHECK(err.key == "logging.level");
  CHECK(err.message == "duplicate key (first at line 2)");
}

TEST_CASE("config: wrong types", "[config]") {
  auto err = load_error("listeners:\n  api:\n    port: abc\n" + kTail);
  CHECK(err.line == 3);
  CHECK(err.key == "listeners.api.port");
  CHECK(err.message == "expected an integer in 0..65535, got 'abc'");

  err = load_error("logging:\n  maxFiles: [1]\n" + kTail);
  CHECK(err.line == 2);
  CHECK(err.key == "logging.maxFiles");
  CHECK(err.message == "expected an integer, got a list");

  err = load_error("logging: debug\n" + kTail);
  CHECK(err.line == 1);
  CHECK(err.key == "logging");
  CHECK(err.message == "expected a mapping, got a scalar");

  err = load_error("logging:\n  level: verbose\n" + kTail);
  CHECK(err.message == "expected one of: trace, debug, info, warn, error, got 'verbose'");

  err = load_error("listeners:\n  api:\n    cors:\n      allowedOrigins: \"*\"\n" + kTail);
  CHECK(err.line == 4);
  CHECK(err.key == "listeners.api.cors.allowedOrigins");
  CHECK(err.message == "expected a list of strings, got a scalar");

  err = load_error(
      "listeners:\n  api:\n    cors:\n      allowedMethods:\n        - GET\n"
      "        - [POST]\n" +
      kTail);
  CHECK(err.line == 6);
  CHECK(err.key == "listeners.api.cors.allowedMethods[1]");
}

TEST_CASE("config: integer ranges", "[config]") {
  auto err = load_error("listeners:\n  api:\n    port: 70000\n" + kTail);
  CHECK(err.line == 3);
  CHECK(err.message == "expected an integer in 0..65535, got '70000'");
  CHECK(load_error("listeners:\n  api:\n    port: -1\n" + kTail).key == "listeners.api.port");
  err = load_error("listeners:\n  api:\n    maxHeaderBytes: 1023\n" + kTail);
  CHECK(err.message == "expected an integer >= 1024, got '1023'");
  err = load_error("router:\n  contextTurns: 1001\n" + kTail);
  CHECK(err.line == 2);
  CHECK(err.key == "router.contextTurns");  // found before the duplicate `router` in kTail
  Config cfg;
  REQUIRE_FALSE(load("listeners:\n  api:\n    port: 0\n    maxPipeline: 2\n", &cfg));
  CHECK(cfg.api.port == 0);
  CHECK(cfg.api.limits.max_pipeline == 2);
}

TEST_CASE("config: listener addresses must be literal IPs", "[config]") {
  auto err = load_error("listeners:\n  api:\n    address: localhost\n" + kTail);
  CHECK(err.line == 3);
  CHECK(err.key == "listeners.api.address");
  CHECK(err.message == "expected an IPv4 or IPv6 address, got 'localhost'");
  CHECK(load_error("listeners:\n  api:\n    address: 10.0.0.256\n" + kTail).line == 3);
  Config cfg;
  REQUIRE_FALSE(load("listeners:\n  api:\n    address: \"::1\"\n", &cfg));
  CHECK(cfg.api.address == "::1");
}

TEST_CASE("config: plugin instances", "[config]") {
  const std::string router = "router:\n  model: a\n  cache: a\n";
  auto err = load_error(
      "plugins:\n  instances:\n    - name: a\n      plugin: a.so\n"
      "    - plugin: b.so\n      name: a\n" +
      router);
  CHECK(err.line == 6);  // the name's line, not the entry's
  CHECK(err.key == "plugins.instances[1].name");
  CHECK(err.message == "duplicate instance name 'a' (first at line 3)");

  err = load_error("plugins:\n  instances:\n    - name: Big\n      plugin: a.so\n" + router);
  CHECK(err.line == 3);
  CHECK(err.key == "plugins.instances[0].name");

  err = load_error("plugins:\n  instances:\n    - name: a\n" + router);
  CHECK(err.line == 3);
  CHECK(err.key == "plugins.instances[0].plugin");
  CHECK(err.message == "required key missing");

  err = load_error("plugins:\n  instances:\n    - name: a\n      plugin: a.so\n      config: 5\n" +
                   router);
  CHECK(err.line == 5);
  CHECK(err.key == "plugins.instances[0].config");

  Config cfg;
  auto ok = cg::config_load_string(
      "plugins:\n  dir: /p\n  instances:\n    - name: a\n"
      "      plugin: a.so\n    - name: b-2\n      plugin: ./x/b.so\n"
      "      config:\n        key: ${CG_T_NOT_EXPANDED_HERE}\n" +
          router,
      "t.yaml", &cfg);
  REQUIRE_FALSE(ok);
  CHECK(cfg.plugins[0].path == "/p/a.so");
  CHECK(cfg.plugins[0].line == 4);
  CHECK(cfg.plugins[1].path == "./x/b.so");
  CHECK(cg::config_plugin_section(cfg.plugins[1])["key"].Scalar() == "${CG_T_NOT_EXPANDED_HERE}");
  CHECK(cg::config_line(cg::config_plugin_section(cfg.plugins[1])["key"]) == 9);
}

TEST_CASE("config: router must name configured instances", "[config]") {
  const std::string plugins = "plugins:\n  instances:\n    - name: echo\n      plugin: echo.so\n";
  auto err = load_error(plugins + "router:\n  model: gpt\n  cache: echo\n");
  CHECK(err.line == 6);
  CHECK(err.key == "router.model");
  CHECK(err.message == "no plugin instance named 'gpt' (configured: echo)");

  err = load_error(plugins + "router:\n  model: echo\n  cache: redis\n");
  CHECK(err.line == 7);
  CHECK(err.key == "router.cache");

  err = load_error(plugins + "router:\n  cache: echo\n");
  CHECK(err.line == 5);
  CHECK(err.key == "router.model");
  CHECK(err.message.rfind("required key missing", 0) == 0);

  // Without a router section the error still names a line: the top of the file.
  err = load_error("");
  CHECK(err.line == 1);
  CHECK(err.key == "router.model");
  CHECK(err.to_string() ==
        "test.yaml:1: router.model: required key missing (name a plugins.instances entry)");
  err = load_error("# comment\n\nshutdown:\n  deadlineMs: 5\n");
  CHECK(err.line == 3);
  CHECK(err.key == "router.model");

  // `router:` with nothing under it: the line of `router:`.
  err = load_error(plugins + "router:\nshutdown: {}\n");
  CHECK(err.line == 5);
  CHECK(err.key == "router.model");
  err = load_error(plugins + "router: ~\n");
  CHECK(err.line == 5);
}

TEST_CASE("config: YAML syntax errors and documents", "[config]") {
  auto err = load_error("logging:\n  level: info\n   file: x\n");
  CHECK(err.line == 3);
  CHECK(err.key.empty());
  CHECK(err.message.rfind("invalid YAML: ", 0) == 0);

  err = load_error("listeners: [1, 2\nrouter: {}\n");
  CHECK(err.line == 2);

  err = load_error(kTail + "---\n" + kTail);
  CHECK(err.line == 12);
  CHECK(err.message == "expected one YAML document");

  err = load_error("- a\n- b\n");
  CHECK(err.line == 1);
  CHECK(err.message == "expected a mapping at the top, got a list");
}

TEST_CASE("config: logging bounds", "[config]") {
  auto err = load_error("logging:\n  maxSizeMb: 1048577\n" + kTail);
  CHECK(err.line == 2);
  CHECK(err.key == "logging.maxSizeMb");
  CHECK(err.message == "expected an integer in 1..1048576, got '1048577'");
  err = load_error("logging:\n  maxSizeMb: 0\n" + kTail);
  CHECK(err.message == "expected an integer in 1..1048576, got '0'");
  // Once big enough to overflow max_size_mb * 1024 * 1024.
  err = load_error("logging:\n  maxSizeMb: 17592186044416\n" + kTail);
  CHECK(err.key == "logging.maxSizeMb");

  err = load_error("logging:\n  maxFiles: 200001\n" + kTail);
  CHECK(err.key == "logging.maxFiles");
  CHECK(err.message == "expected an integer in 1..200000, got '200001'");
  CHECK(load_error("logging:\n  maxFiles: 0\n" + kTail).key == "logging.maxFiles");

  Config cfg;
  REQUIRE_FALSE(load("logging:\n  maxSizeMb: 1048576\n  maxFiles: 200000\n", &cfg));
  CHECK(cfg.logging.max_size_mb == cg::kLogMaxSizeMbLimit);
  CHECK(cfg.logging.max_files == cg::kLogMaxFilesLimit);
}

TEST_CASE("config: malformed integers are errors", "[config]") {
  auto err = load_error("listeners:\n  api:\n    port: +-5\n" + kTail);
  CHECK(err.line == 3);
  CHECK(err.key == "listeners.api.port");
  CHECK(err.message == "expected an integer in 0..65535, got '+-5'");
  for (const char *bad :
       {"\"\"", "\"+\"", "\"-\"", "\" 5\"", "\"5 \"", "0x10", "1e3", "5.0", "--5"}) {
    INFO(bad);
    err = load_error("listeners:\n  api:\n    port: " + std::string(bad) + "\n" + kTail);
    CHECK(err.line == 3);
    CHECK(err.message.rfind("expected an integer in 0..65535, got '", 0) == 0);
  }

  // Beyond int64 the message says why, since the text does look like a number.
  err = load_error("shutdown:\n  deadlineMs: 99999999999999999999\n" + kTail);
  CHECK(err.line == 2);
  CHECK(err.message ==
        "expected an integer >= 0, got '99999999999999999999' (out of the 64-bit range)");
  err = load_error("listeners:\n  api:\n    port: -99999999999999999999\n" + kTail);
  CHECK(err.message ==
        "expected an integer in 0..65535, got '-99999999999999999999' (out of the 64-bit range)");
}

TEST_CASE("config: files", "[config]") {
  Config cfg;
  auto err = cg::config_load_file("/nonexistent/chatgate.yaml", &cfg);
  REQUIRE(err);
  CHECK(err->to_string() == "/nonexistent/chatgate.yaml: cannot open: No such file or directory");

  const std::string path = (std::filesystem::temp_directory_path() /
                            ("cg_test_config_" + std::to_string(getpid()) + ".yaml"))
                               .string();
  std::ofstream(path) << "shutdown:\n  deadlineMs: -5\n" << kTail;
  err = cg::config_load_file(path, &cfg);
  std::filesystem::remove(path);
  REQUIRE(err);
  CHECK(err->to_string() == path + ":2: shutdown.deadlineMs: expected an integer >= 0, got '-5'");
}

TEST_CASE("config: error text format", "[config]") {
  CHECK(ConfigError{"f.yaml", 3, "a.b", "bad"}.to_string() == "f.yaml:3: a.b: bad");
  CHECK(ConfigError{"f.yaml", 0, "a.b", "bad"}.to_string() == "f.yaml: a.b: bad");
  CHECK(ConfigError{"f.yaml", 7, "", "bad"}.to_string() == "f.yaml:7: bad");
}

TEST_CASE("config: scalar parsers", "[config]") {
  CHECK(cg::config_parse_int("42") == 42);
  CHECK(cg::config_parse_int("+42") == 42);
  CHECK(cg::config_parse_int("-42") == -42);
  CHECK(cg::config_parse_int("007") == 7);
  CHECK(cg::config_parse_int("-0") == 0);
  CHECK(cg::config_parse_int("9223372036854775807") == INT64_MAX);
  CHECK(cg::config_parse_int("-9223372036854775808") == INT64_MIN);
  for (const char *bad :
       {"4 2", "++4", "+-5", "-+5", "--5", "", "+", "-", " 5", "5 ", "5\n", "0x10", "1e3", "1.0",
        "9223372036854775808", "-9223372036854775809", "99999999999999999999"}) {
    INFO("'" << bad << "'");
    CHECK_FALSE(cg::config_parse_int(bad));
  }
  CHECK(cg::config_is_decimal("99999999999999999999"));
  CHECK(cg::config_is_decimal("-5"));
  CHECK_FALSE(cg::config_is_decimal("+-5"));
  CHECK_FALSE(cg::config_is_decimal("-"));
  CHECK_FALSE(cg::config_is_decimal("1e3"));

  CHECK(cg::config_parse_bool("TRUE") == true);
  CHECK(cg::config_parse_bool("false") == false);
  CHECK_FALSE(cg::config_parse_bool("yes"));
  CHECK(cg::config_parse_double("0.5") == 0.5);
  CHECK(cg::config_parse_double("1e3") == 1000.0);
  CHECK(cg::config_parse_double("-2.5") == -2.5);
  CHECK(cg::config_parse_double("+.5") == 0.5);
  for (const char *bad : {"inf", "-inf", "+nan", "1.5x", "+-5", "-+5", "--5", "", "+", "-", " 1",
                          "1 ", "0x10", "1e999"}) {
    INFO("'" << bad << "'");
    CHECK_FALSE(cg::config_parse_double(bad));
  }
}

TEST_CASE("config: default plugin dir", "[config]") {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  REQUIRE(n > 0);
  const auto beside = std::filesystem::path(std::string(buf, n)).parent_path() / "plugins";
  const std::string expected =
      std::filesystem::is_directory(beside) ? beside.string() : CHATGATE_INSTALL_PLUGIN_DIR;
  CHECK(cg::config_default_plugin_dir() == expected);
}

// ---- plugin schema ---------------------------------------------------------

namespace {

cg_config_field_t field(uint32_t type, const char *key, uint32_t flags = 0,
                        const char *default_value = nullptr, const char *description = nullptr,
                        const char *choices = nullptr, int64_t min = 0, int64_t max = 0) {
  return cg_config_field_t{
      sizeof(cg_config_field_t), type, flags, key, default_value, description, choices, min, max};
}

const cg_config_field_t kFields[] = {
    field(CG_CFG_STRING, "appId", CG_CFG_REQUIRED, nullptr, "the app id"),
    field(CG_CFG_STRING, "appSecret", CG_CFG_REQUIRED | CG_CFG_SECRET, nullptr, "the app secret"),
    field(CG_CFG_INT, "timeout", 0, "30000", "request timeout in ms", nullptr, 1, 600000),
    field(CG_CFG_BOOL, "stream", 0, "true", "stream answers"),
    field(CG_CFG_DOUBLE, "temperature", 0, "0.7"),
    field(CG_CFG_STRING_LIST, "origins", 0, "[a, b]", "allowed origins"),
    field(CG_CFG_ENUM, "mode", 0, "text", "reply format", "text|markdown"),
    field(CG_CFG_STRING, "note"),
    field(CG_CFG_STRING, "channel", 0, "#general"),
    field(CG_CFG_STRING, "prefix", 0, ""),
};
const cg_config_field_t *const kSchema[] = {&kFields[0], &kFields[1], &kFields[2], &kFields[3],
                                            &kFields[4], &kFields[5], &kFields[6], &kFields[7],
                                            &kFields[8], &kFields[9]};
const std::string kPrefix = "plugins.instances[1].config";

std::optional<ConfigError> validate(const std::string &yaml, cg::PluginConfig *out,
                                    std::span<const cg_config_field_t *const> schema = kSchema) {
  return cg::plugin_config_validate(YAML::Load(yaml), schema, "test.yaml", kPrefix, out);
}

ConfigError validate_error(const std::string &yaml,
                           std::span<const cg_config_field_t *const> schema = kSchema) {
  cg::PluginConfig pc;
  auto err = validate(yaml, &pc, schema);
  REQUIRE(err.has_value());
  CHECK(err->file == "test.yaml");
  return *err;
}

const std::string kRequired = "appId: id1\nappSecret: s3cr3t\n";

}  // namespace

TEST_CASE("plugin config: every type from the operator", "[config][schema]") {
  EnvGuard id("CG_T_APP_ID", "from-env");
  EnvGuard origin("CG_T_ORIGIN", "https://x");
  cg::PluginConfig pc;
  auto err = validate(
      "appId: ${CG_T_APP_ID}\nappSecret: s\ntimeout: 600000\nstream: false\n"
      "temperature: 1.5\norigins: [\"${CG_T_ORIGIN}\", c]\nmode: markdown\n"
      "note: hi\n",
      &pc);
  INFO((err ? err->to_string() : ""));
  REQUIRE_FALSE(err);
  CHECK(pc.find("appId")->str == "from-env");
  CHECK(pc.find("appId")->type == CG_CFG_STRING);
  CHECK(pc.find("appSecret")->secret);
  CHECK_FALSE(pc.find("appId")->secret);
  CHECK(pc.find("timeout")->i == 600000);
  CHECK(pc.find("stream")->b == false);
  CHECK(pc.find("temperature")->d == 1.5);
  CHECK(pc.find("origins")->list == std::vector<std::string>{"https://x", "c"});
  CHECK(pc.find("mode")->str == "markdown");
  CHECK(pc.find("note")->present);
  CHECK(pc.find("nope") == nullptr);
  CHECK(pc.values().size() == 10);
}

TEST_CASE("plugin config: defaults and absent keys", "[config][schema]") {
  cg::PluginConfig pc;
  REQUIRE_FALSE(validate(kRequired, &pc));
  CHECK(pc.find("timeout")->present);
  CHECK(pc.find("timeout")->i == 30000);
  CHECK(pc.find("stream")->b == true);
  CHECK(pc.find("temperature")->d == 0.7);
  CHECK(pc.find("origins")->list == std::vector<std::string>{"a", "b"});
  CHECK(pc.find("mode")->str == "text");
  CHECK(pc.find("channel")->str == "#general");  // taken as written, not as a YAML comment
  CHECK(pc.find("prefix")->present);
  CHECK(pc.find("prefix")->str.empty());
  const cg::PluginConfigValue *note = pc.find("note");
  REQUIRE(note != nullptr);  // in the schema, so known, but not set
  CHECK_FALSE(note->present);
  CHECK(note->type == CG_CFG_STRING);

  // `key:` with no value counts as not given.
  REQUIRE_FALSE(validate(kRequired + "timeout:\n", &pc));
  CHECK(pc.find("timeout")->i == 30000);

  // A null section is "no keys"; with no required keys it validates.
  const cg_config_field_t *const optional[] = {&kFields[2], &kFields[7]};
  REQUIRE_FALSE(cg::plugin_config_validate(YAML::Node(), optional, "t", kPrefix, &pc));
  CHECK(pc.find("timeout")->i == 30000);
  REQUIRE_FALSE(cg::plugin_config_validate(YAML::Node(YAML::NodeType::Undefined), optional, "t",
                                           kPrefix, &pc));
}

TEST_CASE("plugin config: required keys", "[config][schema]") {
  auto err = validate_error("\nappId: x\n");
  CHECK(err.line == 2);
  CHECK(err.key == "plugins.instances[1].config.appSecret");
  CHECK(err.message == "required key missing");

  cg::PluginConfig pc;
  auto null_err = cg::plugin_config_validate(YAML::Node(), kSchema, "t", kPrefix, &pc);
  REQUIRE(null_err);
  CHECK(null_err->line == 0);  // no section and no instance line: nothing to point at
  CHECK(null_err->key == "plugins.instances[1].config.appId");
  null_err = cg::plugin_config_validate(YAML::Node(), kSchema, "t", kPrefix, &pc, 7);
  REQUIRE(null_err);
  CHECK(null_err->line == 7);
}

TEST_CASE("plugin config: a required key of an instance without config names its line",
          "[config][schema]") {
  const cg_config_field_t token = field(CG_CFG_STRING, "token", CG_CFG_REQUIRED | CG_CFG_SECRET);
  const cg_config_field_t *const schema[] = {&token};
  Config cfg;
  // Instances start on lines 3, 5, 7, 9 (`config:` null) and 12 (`config: {}` on 14).
  auto err = cg::config_load_string(
      "plugins:\n"
      "  instances:\n"
      "    - name: echo\n"
      "      plugin: echo.so\n"
      "    - name: memory\n"
      "      plugin: memory.so\n"
      "    - name: bot\n"
      "      plugin: bot.so\n"
      "    - plugin: bot.so\n"
      "      name: bot2\n"
      "      config:\n"
      "    - name: bot3\n"
      "      plugin: bot.so\n"
      "      config: {}\n"
      "router:\n  model: echo\n  cache: memory\n",
      "n.yaml", &cfg);
  REQUIRE_FALSE(err);
  auto validate_instance = [&](size_t i) {
    cg::PluginConfig pc;
    const std::string prefix = "plugins.instances[" + std::to_string(i) + "].config";
    auto e = cg::plugin_config_validate(cg::config_plugin_section(cfg.plugins[i]), schema, cfg.file,
                                        prefix, &pc, cfg.plugins[i].line);
    REQUIRE(e);
    return *e;
  };
  CHECK(validate_instance(2).to_string() ==
        "n.yaml:7: plugins.instances[2].config.token: required key missing");
  CHECK(validate_instance(3).line == 9);  // `config:` with nothing under it
  CHECK(validate_instance(4).line == 14);
}

TEST_CASE("plugin config: bad values", "[config][schema]") {
  auto err = validate_error(kRequired + "mode: html\n");
  CHECK(err.line == 3);
  CHECK(err.key == kPrefix + ".mode");
  CHECK(err.message == "expected one of: text, markdown, got 'html'");

  err = validate_error(kRequired + "timeout: 0\n");
  CHECK(err.message == "expected an integer in 1..600000, got '0'");
  err = validate_error(kRequired + "timeout: 600001\n");
  CHECK(err.message == "expected an integer in 1..600000, got '600001'");
  err = validate_error(kRequired + "timeout: soon\n");
  CHECK(err.message == "expected an integer in 1..600000, got 'soon'");

  err = validate_error(kRequired + "stream: yes\n");
  CHECK(err.message == "expected true or false, got 'yes'");
  err = validate_error(kRequired + "temperature: warm\n");
  CHECK(err.message == "expected a number, got 'warm'");

  err = validate_error(kRequired + "origins: https://x\n");
  CHECK(err.line == 3);
  CHECK(err.key == kPrefix + ".origins");
  CHECK(err.message.rfind("expected a list of strings", 0) == 0);
  err = validate_error(kRequired + "origins:\n  - a\n  - {b: c}\n");
  CHECK(err.line == 5);
  CHECK(err.key == kPrefix + ".origins[1]");

  err = validate_error(kRequired + "note: {a: 1}\n");
  CHECK(err.message == "expected a string, got a mapping");
  err = validate_error(kRequired + "note: ${CG_T_SURELY_UNSET}\n");
  CHECK(err.message == "environment variable CG_T_SURELY_UNSET is not set");

  // An INT without bounds (min == max) takes any int64.
  const cg_config_field_t any_int = field(CG_CFG_INT, "n");
  const cg_config_field_t *const schema[] = {&any_int};
  cg::PluginConfig pc;
  REQUIRE_FALSE(validate("n: -9000000000\n", &pc, schema));
  CHECK(pc.find("n")->i == -9000000000LL);

  err = validate_error("n: +-5\n", schema);
  CHECK(err.message == "expected an integer, got '+-5'");
  err = validate_error("n: 99999999999999999999\n", schema);
  CHECK(err.message == "expected an integer, got '99999999999999999999' (out of the 64-bit range)");
  err = validate_error(kRequired + "timeout: 99999999999999999999\n");
  CHECK(err.message ==
        "expected an integer in 1..600000, got '99999999999999999999' (out of the 64-bit range)");
  err = validate_error(kRequired + "temperature: +-1\n");
  CHECK(err.message == "expected a number, got '+-1'");
}

TEST_CASE("plugin config: unknown and duplicate keys, non-mapping sections", "[config][schema]") {
  auto err = validate_error(kRequired + "appid: x\n");
  CHECK(err.line == 3);
  CHECK(err.key == kPrefix + ".appid");
  CHECK(err.message ==
        "unknown key 'appid' (expected one of: appId, appSecret, timeout, stream, temperature, "
        "origins, mode, note, channel, prefix)");

  err = validate_error("a: 1\n", {});
  CHECK(err.message == "unknown key 'a' (this plugin takes no config)");

  err = validate_error(kRequired + "appId: y\n");
  CHECK(err.line == 3);
  CHECK(err.message == "duplicate key (first at line 1)");

  err = validate_error("[1, 2]\n");
  CHECK(err.key == kPrefix);
  CHECK(err.message == "expected a mapping of config keys");
}

TEST_CASE("plugin config: secret values never appear in errors", "[config][schema]") {
  const cg_config_field_t pin =
      field(CG_CFG_INT, "pin", CG_CFG_SECRET, nullptr, nullptr, nullptr, 1, 10);
  const cg_config_field_t level =
      field(CG_CFG_ENUM, "level", CG_CFG_SECRET, nullptr, nullptr, "low|high");
  const cg_config_field_t *const schema[] = {&pin, &level};
  EnvGuard secret("CG_T_SECRET", "hunter2");

  auto err = validate_error("pin: ${CG_T_SECRET}\n", schema);
  CHECK(err.message == "expected an integer in 1..10");
  CHECK(err.to_string().find("hunter2") == std::string::npos);
  err = validate_error("level: hunter2\n", schema);
  CHECK(err.message == "expected one of: low, high");
  err = validate_error("appId: x\nappSecret: [hunter2]\n");
  CHECK(err.message == "expected a string, got a list");
}

TEST_CASE("plugin config: bad schemas are plugin errors", "[config][schema]") {
  const cg_config_field_t bad_default =
      field(CG_CFG_INT, "retries", 0, "many", nullptr, nullptr, 0, 5);
  const cg_config_field_t *const schema[] = {&bad_default};
  auto err = validate_error("{}\n", schema);
  CHECK(err.key == kPrefix + ".retries");
  CHECK(err.line == 0);
  CHECK(err.message ==
        "the plugin's default is invalid (a plugin bug): expected an integer in 0..5, got 'many'");

  // A plugin bug is found at an instance: the error names the instance's line.
  cg::PluginConfig pc;
  auto at = cg::plugin_config_validate(YAML::Load("{}"), schema, "t.yaml", kPrefix, &pc, 12);
  REQUIRE(at);
  CHECK(at->to_string().rfind("t.yaml:12: " + kPrefix + ".retries: the plugin's default", 0) == 0);

  const cg_config_field_t bad_list = field(CG_CFG_STRING_LIST, "hosts", 0, "a");
  const cg_config_field_t *const list_schema[] = {&bad_list};
  CHECK(validate_error("{}\n", list_schema)
            .message.rfind(
                "the plugin's default is invalid (a plugin bug): expected a list of strings", 0) ==
        0);

  const cg_config_field_t *const twice[] = {&kFields[7], &kFields[7]};
  CHECK(validate_error("{}\n", twice).message == "plugin schema declares the key twice");

  cg_config_field_t small = kFields[7];
  small.struct_size = 8;
  const cg_config_field_t *const malformed[] = {&small};
  CHECK(validate_error("{}\n", malformed).message ==
        "plugin schema field 0 is malformed (struct_size too small)");

  const cg_config_field_t no_choices = field(CG_CFG_ENUM, "e");
  const cg_config_field_t *const enum_schema[] = {&no_choices};
  CHECK(validate_error("{}\n", enum_schema).message ==
        "plugin schema declares an enum without choices");

  for (auto bad_schema : {std::span<const cg_config_field_t *const>(twice),
                          std::span<const cg_config_field_t *const>(malformed),
                          std::span<const cg_config_field_t *const>(enum_schema)}) {
    auto e = cg::plugin_config_validate(YAML::Load("{}"), bad_schema, "t.yaml", kPrefix, &pc, 12);
    REQUIRE(e);
    CHECK(e->line == 12);
  }
}

TEST_CASE("plugin config: defaults are taken literally, without ${VAR} expansion",
          "[config][schema]") {
  EnvGuard set("CG_T_DEFAULT_VAR", "from-env");
  const cg_config_field_t tpl =
      field(CG_CFG_STRING, "tpl", 0, "Hi ${name}, $${x} ${CG_T_DEFAULT_VAR}");
  const cg_config_field_t unterminated = field(CG_CFG_STRING, "open", 0, "${");
  const cg_config_field_t list = field(CG_CFG_STRING_LIST, "list", 0, "[\"${A}\", b]");
  const cg_config_field_t *const schema[] = {&tpl, &unterminated, &list};
  cg::PluginConfig pc;
  auto err = validate("{}\n", &pc, schema);
  INFO((err ? err->to_string() : ""));
  REQUIRE_FALSE(err);
  CHECK(pc.find("tpl")->str == "Hi ${name}, $${x} ${CG_T_DEFAULT_VAR}");
  CHECK(pc.find("open")->str == "${");
  CHECK(pc.find("list")->list == std::vector<std::string>{"${A}", "b"});

  // The operator's values still expand.
  REQUIRE_FALSE(validate("tpl: ${CG_T_DEFAULT_VAR}\n", &pc, schema));
  CHECK(pc.find("tpl")->str == "from-env");
}

TEST_CASE("plugin config: help text", "[config][schema]") {
  CHECK(cg::plugin_config_help(kSchema) ==
        "  appId (string, required): the app id\n"
        "  appSecret (string, required, secret): the app secret\n"
        "  timeout (int 1..600000, default 30000): request timeout in ms\n"
        "  stream (bool, default true): stream answers\n"
        "  temperature (double, default 0.7)\n"
        "  origins (string list, default [a, b]): allowed origins\n"
        "  mode (enum text|markdown, default text): reply format\n"
        "  note (string)\n"
        "  channel (string, default #general)\n"
        "  prefix (string, default \"\")\n");
  CHECK(cg::plugin_config_help({}).empty());
}

// Found by tests/fuzz/fuzz_config: yaml-cpp 0.7's parser never returns on
// these; config_yaml.cc reads them with libyaml instead. A regression shows
// as this test hanging (ctest's timeout).
TEST_CASE("config: documents that hang yaml-cpp's parser come back with an error", "[config]") {
  for (const char *text :
       {", a\n", "# comment\n, pa9999\n", "- a\n, b\n", "\"a\"\n, b\n", "&x , a\n", "!!str , a\n",
        "a: 1\n---\n, b\n", "\xef\xbb\xbf, a\n", "! 8\n? "}) {
    INFO(text);
    cg::Config cfg;
    const auto err = cg::config_load_string(text, "hang.yaml", &cfg);
    REQUIRE(err);  // an error, whichever: the point is that it comes back
    CHECK(err->line >= 1);
  }
  // A lone CR ends a comment for libyaml but not for yaml-cpp: refused.
  for (const char *text :
       {"#  : \rpe9\n, 9\n", "a: 1\rb: 2\n", "a: \xc2\x85\n", "a: \xe2\x80\xa8\n"}) {
    INFO(text);
    cg::Config cfg;
    const auto err = cg::config_load_string(text, "breaks.yaml", &cfg);
    REQUIRE(err);
    CHECK(err->line == 1);
  }
  cg::Config cfg;
  const auto err = cg::config_load_string("a: 1\nb: \x01\n", "ctl.yaml", &cfg);
  REQUIRE(err);
  CHECK(err->line == 2);
  CHECK(err->message.find("control characters") != std::string::npos);
  // CRLF files load, with the same lines.
  cg::Config crlf;
  const auto bad = cg::config_load_string("logging:\r\n  level: loud\r\n", "crlf.yaml", &crlf);
  REQUIRE(bad);
  CHECK(bad->line == 2);
  CHECK(bad->key == "logging.level");
}

TEST_CASE("config: router.queue and the queue section", "[config]") {
  const std::string instances = R"(plugins:
  dir: /opt/cg
  instances:
    - name: echo
      plugin: echo.so
    - name: redis
      plugin: redis.so
    - name: memory
      plugin: memory.so
)";
  Config cfg;
  auto ok = cg::config_load_string(instances + R"(router:
  model: echo
  cache: redis
  queue: redis
queue:
  partitions: 8
  leaseMs: 3000
  maxDeliveries: 2
  readBatch: 10
  replyRecordTtlSeconds: 600
)",
                                   "test.yaml", &cfg);
  REQUIRE_FALSE(ok.has_value());
  CHECK(cfg.router.queue == "redis");
  CHECK(cfg.router.queue_settings.partitions == 8);
  CHECK(cfg.router.queue_settings.lease_ms == 3000);
  CHECK(cfg.router.queue_settings.max_deliveries == 2);
  CHECK(cfg.router.queue_settings.read_batch == 10);
  CHECK(cfg.router.queue_settings.record_ttl_seconds == 600);

  // The queue must sit beside the cache: reply records are read through it.
  ConfigError err = load_error(instances + R"(router:
  model: echo
  cache: memory
  queue: redis
)");
  CHECK(err.key == "router.queue");
  CHECK(err.line == 13);
  CHECK(err.message.find("same instance as router.cache") != std::string::npos);

  // A queue section without router.queue would be silently unused.
  err = load_error(instances + R"(router:
  model: echo
  cache: redis
queue:
  partitions: 4
)");
  CHECK(err.key == "queue");
  CHECK(err.message.find("without router.queue") != std::string::npos);

  err = load_error(instances + R"(router:
  model: echo
  cache: redis
  queue: redis
queue:
  partitons: 4
)");
  CHECK(err.key == "queue.partitons");

  err = load_error(instances + R"(router:
  model: echo
  cache: redis
  queue: redis
queue:
  leaseMs: 10
)");
  CHECK(err.key == "queue.leaseMs");
}
