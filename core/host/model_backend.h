// The router's handle on a model backend plugin instance: generate and
// cancel with the instance's own error text attached, so the router never
// touches a plugin's ops table or state pointer.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <chatgate/plugin.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace cg {

class PluginInstance;

class ModelBackend {
 public:
  explicit ModelBackend(PluginInstance &instance) : instance_(instance) {}
  std::string_view name() const;
  // As cg_model_ops_t.generate: 0 and the sink's on_done follows exactly
  // once, or an error, no callback, and *why holds the plugin's own message
  // (may be empty). OWNERSHIP: `req` and `sink` are borrowed for the call;
  // sink.arg stays the caller's until on_done ran.
  int generate(const cg_model_request_t &req, const cg_model_sink_t &sink, uint64_t *call_id,
               std::string *why);
  // As cg_model_ops_t.cancel: on_done then fires with CG_ECANCELED on a
  // later turn; CG_ENOENT when the call already ended.
  int cancel(uint64_t call_id);

 private:
  PluginInstance &instance_;
};

}  // namespace cg
