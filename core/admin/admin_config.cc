#include "admin/admin_config.h"

#include <fmt/format.h>

#include "base/json.h"
#include "config/config_schema.h"
#include "host/plugin_instance.h"

namespace cg {
namespace {

constexpr std::string_view kMask = "\"********\"";

std::string listener_json(const HttpListenerConfig &c) {
  const HttpLimits &l = c.limits;
  std::string origins = "[";
  for (const std::string &o : c.cors.allowed_origins) {
    if (origins.size() > 1) origins += ",";
    origins += json_quote(o);
  }
  origins += "]";
  return fmt::format(
      "{{\"address\":{},\"port\":{},\"maxConnections\":{},\"maxHeaderBytes\":{},"
      "\"maxBodyBytes\":{},\"headerTimeoutMs\":{},\"bodyTimeoutMs\":{},\"idleTimeoutMs\":{},"
      "\"maxPipeline\":{},\"cors\":{{\"allowedOrigins\":{}}}}}",
      json_quote(c.address), c.port, l.max_connections, l.max_header_bytes, l.max_body_bytes,
      l.header_timeout_ms, l.body_timeout_ms, l.idle_timeout_ms, l.max_pipeline, origins);
}

std::string value_json(const PluginConfigValue &v) {
  if (!v.present) return "null";
  // A secret shows that it is set, never what it is; an empty one is unset.
  if (v.secret) {
    const bool empty = (v.type == CG_CFG_STRING_LIST) ? v.list.empty() : v.str.empty();
    return empty ? "\"\"" : std::string(kMask);
  }
  switch (v.type) {
    case CG_CFG_INT:
      return std::to_string(v.i);
    case CG_CFG_DOUBLE:
      return fmt::format("{}", v.d);
    case CG_CFG_BOOL:
      return v.b ? "true" : "false";
    case CG_CFG_STRING_LIST: {
      std::string out = "[";
      for (const std::string &item : v.list) {
        if (out.size() > 1) out += ",";
        out += json_quote(item);
      }
      return out + "]";
    }
    default:
      return json_quote(v.str);
  }
}

}  // namespace

std::string admin_config_json(const Config &c,
                              const std::vector<std::unique_ptr<PluginInstance>> &plugins) {
  std::string out = fmt::format(
      "{{\"file\":{},\"logging\":{{\"level\":{},\"file\":{},\"maxSizeMb\":{},\"maxFiles\":{}}}",
      json_quote(c.file), json_quote(c.logging.level), json_quote(c.logging.file),
      c.logging.max_size_mb, c.logging.max_files);
  out += ",\"listeners\":{\"api\":" + listener_json(c.api) +
         ",\"admin\":" + listener_json(c.admin_listener);
  out.insert(out.size() - 1, fmt::format(",\"enabled\":{}", c.admin_enabled));
  out += "}";
  out += fmt::format(
      ",\"admin\":{{\"token\":{},\"showContent\":{},\"maxLoginFailures\":{},"
      "\"lockoutSeconds\":{},\"chartIntervalSeconds\":{}}}",
      c.admin.token.empty() ? std::string("\"\"") : std::string(kMask), c.admin.show_content,
      c.admin.max_failures, c.admin.lockout_seconds, c.admin.chart_interval_seconds);
  out += fmt::format(
      ",\"httpClient\":{{\"caFile\":{},\"timeoutMs\":{},\"connectTimeoutMs\":{},"
      "\"maxResponseBytes\":{}}}",
      json_quote(c.http_client.ca_file), c.http_client.timeout_ms, c.http_client.connect_timeout_ms,
      c.http_client.max_response_bytes);
  const RouterConfig &r = c.router;
  out += fmt::format(
      ",\"router\":{{\"model\":{},\"cache\":{},\"queue\":{},\"contextTurns\":{},"
      "\"contextTtlSeconds\":{},\"modelTimeoutMs\":{},\"dedupeTtlSeconds\":{},\"maxQueue\":{},"
      "\"maxConversationBacklog\":{},\"maxModelCalls\":{}}}",
      json_quote(r.model), json_quote(r.cache), json_quote(r.queue), r.context_turns,
      r.context_ttl_seconds, r.model_timeout_ms, r.dedupe_ttl_seconds, r.max_queue,
      r.max_conversation_backlog, r.max_model_calls);
  const QueueConfig &q = r.queue_settings;
  out += fmt::format(
      ",\"queue\":{{\"partitions\":{},\"leaseMs\":{},\"maxDeliveries\":{},\"readBatch\":{},"
      "\"replyRecordTtlSeconds\":{}}}",
      q.partitions, q.lease_ms, q.max_deliveries, q.read_batch, q.record_ttl_seconds);
  out += fmt::format(",\"shutdown\":{{\"deadlineMs\":{}}}", c.shutdown_deadline_ms);
  out += ",\"plugins\":{\"dir\":" + json_quote(c.plugin_dir) + ",\"instances\":[";
  bool first = true;
  for (const auto &p : plugins) {
    if (!first) out += ",";
    first = false;
    out += "{\"name\":" + json_quote(p->name()) + ",\"plugin\":" + json_quote(p->plugin().path) +
           ",\"config\":{";
    bool first_key = true;
    for (const auto &[key, value] : p->config().values()) {
      if (!first_key) out += ",";
      first_key = false;
      out += json_quote(key) + ":" + value_json(value);
    }
    out += "}}";
  }
  return out + "]}}";
}

}  // namespace cg
