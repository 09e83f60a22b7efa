// The config loader: YAML, ${VAR} expansion, every core section's checks.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const bool env = [] {
    setenv("FUZZ_SET", "8080", 1);
    setenv("FUZZ_EMPTY", "", 1);
    return true;
  }();
  (void)env;
  cg::Config cfg;
  (void)cg::config_load_string({reinterpret_cast<const char *>(data), size}, "fuzz.yaml", &cfg);
  std::string error;
  (void)cg::config_expand_env({reinterpret_cast<const char *>(data), size}, &error);
  return 0;
}
