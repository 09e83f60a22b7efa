// HttpServer's routing, CORS, and the answer API (respond, streaming,
// aborts), with the per-route request counters.
//
// Routing picks, among the routes whose method is the request's, the exact
// one for the path, else the longest matching prefix. Only when no route of
// that method matches does the method matter for the answer: 405 with the
// methods that would have matched in Allow, or 404 when none would. HEAD
// without a HEAD route uses the GET route and is answered without a body.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <utility>

#include "base/metrics.h"
#include "net/http_server_impl.h"

namespace cg {

// --- Routing and CORS ----------------------------------------------------------

std::string_view HttpServer::Impl::allowed_origin(const HttpRequest &req) const {
  const auto &allowed = config.cors.allowed_origins;
  if (allowed.empty()) return {};
  std::string_view origin = req.header("Origin");
  if (origin.empty()) return {};
  for (const std::string &o : allowed) {
    if (o == "*" || o == origin) return origin;
  }
  return {};
}

namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

// The requested method must be an allowed one (methods are case-sensitive)
// and every requested header an allowed one (header names are not).
bool HttpServer::Impl::preflight_allowed(const HttpRequest &req) const {
  const std::string_view method = req.header("Access-Control-Request-Method");
  const auto &methods = config.cors.allowed_methods;
  if (std::find(methods.begin(), methods.end(), method) == methods.end()) return false;
  std::string_view rest = req.header("Access-Control-Request-Headers");
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string_view name = trim_ows(rest.substr(0, comma));
    rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    if (name.empty()) continue;
    const auto &headers = config.cors.allowed_headers;
    if (std::none_of(headers.begin(), headers.end(),
                     [&](const std::string &h) { return iequals(h, name); })) {
      return false;
    }
  }
  return true;
}

void HttpServer::Impl::add_allow(std::string_view method) {
  // Few routes share a path, so a substring scan is enough to deduplicate.
  size_t pos = 0;
  while ((pos = allow.find(method, pos)) != std::string::npos) {
    size_t end = pos + method.size();
    if ((pos == 0 || allow[pos - 1] == ' ') && (end == allow.size() || allow[end] == ',')) return;
    pos = end;
  }
  if (!allow.empty()) allow.append(", ");
  allow.append(method);
}

const HttpServer::Impl::Route *HttpServer::Impl::find_route(std::string_view method,
                                                            std::string_view path) {
  allow.clear();
  for (const Route &r : exact_routes) {
    if (r.path != path) continue;
    if (r.method == method) return &r;
    add_allow(r.method);
  }
  for (const Route &r : prefix_routes) {
    if (!path.starts_with(r.path)) continue;
    if (r.method == method) return &r;
    add_allow(r.method);
  }
  return nullptr;
}

void HttpServer::Impl::dispatch(HttpExchange *ex) {
  ++in_flight;
  if (refuse_by_access(ex)) return;
  const HttpRequest &req = ex->request;
  ex->cors_origin = allowed_origin(req);
  ex->cors_vary = cors_enabled();
  if (!config.cors.allowed_origins.empty() && req.method() == "OPTIONS" &&
      !req.header("Access-Control-Request-Method").empty()) {
    if (ex->cors_origin.empty() || !preflight_allowed(req)) {
      respond(ex, 403, kJsonType, http_error_body(403));
      return;
    }
    // A preflight for a path and method that no route serves: say so, rather
    // than let the browser send a request that can only fail.
    const std::string_view want = req.header("Access-Control-Request-Method");
    if (find_route(want, req.path()) == nullptr &&
        !(want == "HEAD" && find_route("GET", req.path()) != nullptr)) {
      respond(ex, 404, kJsonType, http_error_body(404));
      return;
    }
    const HttpHeader preflight[] = {{"Access-Control-Allow-Methods", cors_methods},
                                    {"Access-Control-Allow-Headers", cors_headers},
                                    {"Access-Control-Max-Age", cors_max_age}};
    respond(ex, 204, preflight, {});
    return;
  }
  const Route *route = find_route(req.method(), req.path());
  // HEAD is GET without the body (RFC 9110); the connection drops the body.
  if (route == nullptr && req.method() == "HEAD") route = find_route("GET", req.path());
  if (route != nullptr) {
    invoke(*route, ex);
  } else if (allow.empty()) {
    respond(ex, 404, kJsonType, http_error_body(404));
  } else {
    const HttpHeader headers[] = {kJsonType[0], {"Allow", allow}};
    respond(ex, 405, headers, http_error_body(405));
  }
}

void HttpServer::Impl::invoke(const Route &route, HttpExchange *ex) {
  // An exception must not unwind through libuv's C frames; answer 500 for a
  // handler that threw before answering.
  ex->route = route.label;
  HttpExchange *outer = std::exchange(dispatching, ex);
  bool outer_answered = std::exchange(dispatch_answered, false);
  try {
    route.handler(ex, ex->request);
  } catch (const std::exception &e) {
    spdlog::error("listener '{}': handler for {} {} threw: {}", config.name, route.method,
                  route.path, e.what());
    if (!dispatch_answered) respond(ex, 500, kJsonType, http_error_body(500));
  } catch (...) {
    spdlog::error("listener '{}': handler for {} {} threw", config.name, route.method, route.path);
    if (!dispatch_answered) respond(ex, 500, kJsonType, http_error_body(500));
  }
  dispatching = outer;
  dispatch_answered = outer_answered;
}

// --- Answers -----------------------------------------------------------------

void HttpServer::Impl::answered(HttpExchange *ex) {
  if (ex == dispatching) dispatch_answered = true;
}

void HttpServer::Impl::respond(HttpExchange *ex, int status, std::span<const HttpHeader> headers,
                               std::string_view body) {
  if (ex == nullptr || ex->state != HttpExchange::State::kPending) {
    spdlog::error("listener '{}': respond() on an exchange that is not awaiting an answer",
                  config.name);
    return;
  }
  answered(ex);
  --in_flight;
  count(ex->route, status);
  ex->conn->respond(ex, status, headers, body);  // may free ex and its connection
}

void HttpServer::Impl::count(const std::string *route, int status) {
  if (metrics == nullptr) return;
  auto [it, inserted] = request_counters.try_emplace({route, status}, nullptr);
  if (inserted) {
    std::string labels = "listener=\"" + config.name + "\",route=\"";
    // Route paths are the code's own ("/api/chat", "/webhook/"): no quote
    // or backslash to escape.
    if (route != nullptr) labels += *route;
    labels += "\",status=\"" + std::to_string(status) + "\"";
    it->second = metrics->counter("chatgate_http_requests_total", labels,
                                  "HTTP answers by listener, matched route and status");
  }
  if (it->second != nullptr) *it->second += 1;
}

void HttpServer::set_metrics(Metrics *metrics) { impl_->metrics = metrics; }

int HttpServer::add_route(std::string_view method, std::string_view path, bool prefix,
                          HttpHandler handler) {
  if (method.empty() || path.empty() || path.front() != '/' || !handler) return -EINVAL;
  auto &routes = prefix ? impl_->prefix_routes : impl_->exact_routes;
  for (const auto &r : routes) {
    if (r.method == method && r.path == path) return -EEXIST;
  }
  const std::string *label = &*impl_->route_labels.emplace(path).first;
  routes.push_back({std::string(method), std::string(path), std::move(handler), label});
  if (prefix) {
    std::stable_sort(routes.begin(), routes.end(),
                     [](const auto &a, const auto &b) { return a.path.size() > b.path.size(); });
  }
  return 0;
}

void HttpServer::respond(HttpExchange *ex, int status, std::span<const HttpHeader> headers,
                         std::string_view body) {
  impl_->respond(ex, status, headers, body);
}

void HttpServer::stream_begin(HttpExchange *ex, int status, std::span<const HttpHeader> headers) {
  if (ex == nullptr || ex->state != HttpExchange::State::kPending) {
    spdlog::error("listener '{}': stream_begin() on an exchange that is not awaiting an answer",
                  impl_->config.name);
    return;
  }
  impl_->answered(ex);
  impl_->count(ex->route, status);
  ex->conn->stream_begin(ex, status, headers);
}

void HttpServer::stream_write(HttpExchange *ex, std::string_view data) {
  if (ex == nullptr || ex->state != HttpExchange::State::kStreaming) {
    spdlog::error("listener '{}': stream_write() without stream_begin()", impl_->config.name);
    return;
  }
  ex->conn->stream_write(ex, data);
}

void HttpServer::stream_end(HttpExchange *ex) {
  if (ex == nullptr || ex->state != HttpExchange::State::kStreaming) {
    spdlog::error("listener '{}': stream_end() without stream_begin()", impl_->config.name);
    return;
  }
  --impl_->in_flight;
  ex->conn->stream_end(ex);  // may free ex and its connection
}

void HttpServer::set_abort_callback(HttpExchange *ex, std::function<void()> on_abort) {
  if (ex == nullptr || ex->state == HttpExchange::State::kFree ||
      ex->state == HttpExchange::State::kDone) {
    return;
  }
  if (ex->aborted) {
    // Already gone: tell the caller now rather than never.
    if (on_abort) on_abort();
    return;
  }
  ex->on_abort = std::move(on_abort);
}

bool HttpServer::aborted(const HttpExchange *ex) const { return ex != nullptr && ex->aborted; }

}  // namespace cg
