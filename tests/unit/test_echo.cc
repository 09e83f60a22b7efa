// echo.so loaded through the real loader and driven against a fake host, so
// its answers, cancel and stop follow the SDK's completion rules without a
// running chatgate.
#include <catch2/catch.hpp>
#include <cstring>
#include <deque>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "host/plugin_loader.h"

namespace {

struct FakeTimer {
  cg_timer_cb cb;
  void *arg;
};

struct FakeHost {
  std::string prefix = "echo";
  std::string fail = "none";
  int64_t delay_ms = 0;
  std::deque<std::pair<cg_fn, void *>> deferred;
  std::map<uint64_t, FakeTimer> timers;
  uint64_t next_timer = 1;
  // Set while the test is inside a call into the plugin: a completion that
  // fires then breaks the "never inside the call" rule.
  bool in_call = false;

  void run() {
    while (!deferred.empty()) {
      auto [fn, arg] = deferred.front();
      deferred.pop_front();
      fn(arg);
    }
  }
  // Fires every one-shot timer as if its time had come, then what it deferred.
  void fire_timers() {
    while (!timers.empty()) {
      auto it = timers.begin();
      const uint64_t id = it->first;
      const FakeTimer t = it->second;
      timers.erase(it);
      t.cb(t.arg, id);
    }
    run();
  }
};

FakeHost *g_host = nullptr;

int fake_defer(cg_host_t *, cg_fn fn, void *arg) {
  g_host->deferred.emplace_back(fn, arg);
  return 0;
}
int fake_timer_start(cg_host_t *, uint64_t, uint64_t repeat_ms, cg_timer_cb cb, void *arg,
                     uint64_t *id) {
  CHECK(repeat_ms == 0);
  *id = g_host->next_timer++;
  g_host->timers[*id] = {cb, arg};
  return 0;
}
int fake_timer_stop(cg_host_t *, uint64_t id) {
  return g_host->timers.erase(id) == 1 ? 0 : CG_ENOENT;
}
int fake_config_string(const cg_config_t *, const char *key, cg_str_t *out) {
  const std::string *v = std::strcmp(key, "prefix") == 0 ? &g_host->prefix
                         : std::strcmp(key, "fail") == 0 ? &g_host->fail
                                                         : nullptr;
  if (v == nullptr) return CG_EINVAL;
  *out = {v->data(), v->size()};
  return 0;
}
int fake_config_int(const cg_config_t *, const char *key, int64_t *out) {
  if (std::strcmp(key, "delayMs") != 0) return CG_EINVAL;
  *out = g_host->delay_ms;
  return 0;
}
void fake_set_error(cg_host_t *, cg_str_t) {}

cg_host_api_t make_api() {
  cg_host_api_t api{};
  api.struct_size = sizeof api;
  api.abi_major = CG_ABI_MAJOR;
  api.abi_minor = CG_ABI_MINOR;
  api.defer = fake_defer;
  api.timer_start = fake_timer_start;
  api.timer_stop = fake_timer_stop;
  api.config_string = fake_config_string;
  api.config_int = fake_config_int;
  api.set_error = fake_set_error;
  return api;
}

struct Answer {
  int done_calls = 0;
  int status = 1;
  std::string text;
  std::vector<std::string> deltas;
  bool delta_after_done = false;
};

void on_delta(void *arg, cg_str_t text) {
  CHECK_FALSE(g_host->in_call);
  auto *a = static_cast<Answer *>(arg);
  if (a->done_calls > 0) a->delta_after_done = true;
  a->deltas.emplace_back(text.ptr ? text.ptr : "", text.len);
}

void on_done(void *arg, int status, cg_str_t text) {
  CHECK_FALSE(g_host->in_call);
  auto *a = static_cast<Answer *>(arg);
  a->done_calls++;
  a->status = status;
  a->text.assign(text.ptr ? text.ptr : "", text.len);
}

struct Echo {
  FakeHost host;
  cg_host_api_t api = make_api();
  cg::LoadedPlugin plugin;
  const cg_model_ops_t *ops = nullptr;
  void *state = nullptr;

  explicit Echo(int64_t delay_ms = 0, std::string fail = "none", std::string prefix = "echo") {
    g_host = &host;
    host.delay_ms = delay_ms;
    host.fail = std::move(fail);
    host.prefix = std::move(prefix);
    std::string error;
    REQUIRE(cg::plugin_load(std::string(CG_TEST_PLUGIN_DIR) + "/echo.so", &plugin, &error) == 0);
    REQUIRE(plugin.desc->kind == CG_KIND_MODEL);
    CHECK((plugin.desc->capabilities & CG_MODEL_CAP_STREAMING) != 0);
    ops = static_cast<const cg_model_ops_t *>(plugin.desc->ops);
    REQUIRE(plugin.desc->init(&api, nullptr, nullptr, &state) == 0);
    REQUIRE(plugin.desc->start(state) == 0);
  }
  ~Echo() {
    plugin.desc->destroy(state);
    g_host = nullptr;
  }

  // Starts a call over user/assistant turns (user first, alternating). The
  // request and sink live only for the call, as the SDK allows: echo must
  // have copied what it needs.
  int generate(const std::vector<std::string> &turns, Answer *a, uint64_t *id,
               bool stream = false) {
    std::vector<cg_model_turn_t> t;
    for (size_t i = 0; i < turns.size(); i++) {
      t.push_back({sizeof(cg_model_turn_t),
                   static_cast<uint32_t>(i % 2 == 0 ? CG_ROLE_USER : CG_ROLE_ASSISTANT),
                   {turns[i].data(), turns[i].size()}});
    }
    cg_model_request_t req{};
    req.struct_size = sizeof req;
    req.turn_count = static_cast<uint32_t>(t.size());
    req.turns = t.data();
    req.stream = stream ? 1 : 0;
    const cg_model_sink_t sink{sizeof(cg_model_sink_t), a, on_delta, on_done};
    host.in_call = true;
    const int rc = ops->generate(state, &req, &sink, id);
    host.in_call = false;
    return rc;
  }
  int cancel(uint64_t id) {
    host.in_call = true;
    const int rc = ops->cancel(state, id);
    host.in_call = false;
    return rc;
  }
};

}  // namespace

TEST_CASE("echo answers with the text and the user turn count", "[echo]") {
  Echo e;
  Answer a;
  uint64_t id = 0;
  REQUIRE(e.generate({"hi", "echo: hi (turn 1)", "how", "echo: how (turn 2)", "hello"}, &a, &id) ==
          0);
  CHECK(id != 0);
  CHECK(a.done_calls == 0);  // deferred, never inside generate
  e.host.run();
  CHECK(a.done_calls == 1);
  CHECK(a.status == 0);
  CHECK(a.text == "echo: hello (turn 3)");
  CHECK(a.deltas.empty());  // not asked to stream
}

TEST_CASE("echo uses the configured prefix", "[echo]") {
  Echo e(0, "none", "bot");
  Answer a;
  uint64_t id = 0;
  REQUIRE(e.generate({"x"}, &a, &id) == 0);
  e.host.run();
  CHECK(a.text == "bot: x (turn 1)");
}

TEST_CASE("echo passes NUL bytes and any other bytes through intact", "[echo]") {
  Echo e;
  const std::string query("a\0b\xff\x01z", 6);
  Answer a;
  uint64_t id = 0;
  REQUIRE(e.generate({query}, &a, &id) == 0);
  e.host.run();
  REQUIRE(a.done_calls == 1);
  CHECK(a.text == std::string("echo: ") + query + " (turn 1)");
  CHECK(a.text.size() == 6 + query.size() + 9);
}

TEST_CASE("echo answers an empty query", "[echo]") {
  Echo e;
  Answer a;
  uint64_t id = 0;
  REQUIRE(e.generate({""}, &a, &id) == 0);
  e.host.run();
  CHECK(a.text == "echo:  (turn 1)");
}

TEST_CASE("echo refuses a request without turns, with no callback", "[echo]") {
  Echo e;
  Answer a;
  uint64_t id = 0;
  CHECK(e.generate({}, &a, &id) == CG_EINVAL);
  e.host.run();
  CHECK(a.done_calls == 0);
}

TEST_CASE("echo streams the answer as deltas before on_done", "[echo]") {
  Echo e;
  Answer a;
  uint64_t id = 0;
  REQUIRE(e.generate({"stream me"}, &a, &id, true) == 0);
  CHECK(a.deltas.empty());
  e.host.run();
  REQUIRE(a.done_calls == 1);
  CHECK(a.status == 0);
  CHECK_FALSE(a.delta_after_done);
  std::string joined;
  for (const auto &d : a.deltas) joined += d;
  CHECK_FALSE(a.deltas.empty());
  CHECK(joined == a.text);
  CHECK(a.text == "echo: stream me (turn 1)");
}

TEST_CASE("echo with a delay answers when its timer fires", "[echo]") {
  Echo e(250);
  Answer a;
  uint64_t id = 0;
  REQUIRE(e.generate({"slow"}, &a, &id) == 0);
  e.host.run();
  CHECK(a.done_calls == 0);
  CHECK(e.host.timers.size() == 1);
  e.host.fire_timers();
  CHECK(a.done_calls == 1);
  CHECK(a.text == "echo: slow (turn 1)");
  CHECK(e.cancel(id) == CG_ENOENT);  // finished calls are gone
}

TEST_CASE("echo cancel of a timed call gives exactly one CG_ECANCELED", "[echo]") {
  Echo e(60000);
  Answer a;
  uint64_t id = 0;
  REQUIRE(e.generate({"q"}, &a, &id) == 0);
  CHECK(e.cancel(id) == 0);
  CHECK(a.done_calls == 0);      // never inside cancel
  CHECK(e.host.timers.empty());  // the timer is stopped, not left to fire
  CHECK(e.cancel(id) == 0);      // a second cancel changes nothing
  e.host.fire_timers();
  CHECK(a.done_calls == 1);
  CHECK(a.status == CG_ECANCELED);
  CHECK(e.cancel(id) == CG_ENOENT);
  e.host.fire_timers();
  CHECK(a.done_calls == 1);
}

TEST_CASE("echo cancel of a deferred call gives exactly one CG_ECANCELED", "[echo]") {
  Echo e;
  Answer a;
  uint64_t id = 0;
  REQUIRE(e.generate({"q"}, &a, &id, true) == 0);
  CHECK(e.cancel(id) == 0);
  CHECK(a.done_calls == 0);
  e.host.run();
  CHECK(a.done_calls == 1);
  CHECK(a.status == CG_ECANCELED);
  CHECK(a.deltas.empty());  // a canceled answer streams nothing
}

TEST_CASE("echo cancel of an unknown call is CG_ENOENT", "[echo]") {
  Echo e;
  CHECK(e.cancel(12345) == CG_ENOENT);
}

TEST_CASE("echo configured to fail answers with that error", "[echo]") {
  SECTION("busy") {
    Echo e(0, "busy");
    Answer a;
    uint64_t id = 0;
    REQUIRE(e.generate({"q"}, &a, &id) == 0);
    e.host.run();
    CHECK(a.done_calls == 1);
    CHECK(a.status == CG_EBUSY);
  }
  SECTION("error") {
    Echo e(0, "error");
    Answer a;
    uint64_t id = 0;
    REQUIRE(e.generate({"q"}, &a, &id) == 0);
    e.host.run();
    CHECK(a.done_calls == 1);
    CHECK(a.status == CG_EIO);
  }
}

namespace {

// Calls stop like the host does and records how its done fired.
struct Stopped {
  std::vector<Answer *> calls;
  int done_calls = 0;
  int status = 1;
  bool after_calls = false;
};

void stop(Echo &e, Stopped *s) {
  e.host.in_call = true;
  e.plugin.desc->stop(
      e.state,
      [](void *arg, int status) {
        CHECK_FALSE(g_host->in_call);
        auto *st = static_cast<Stopped *>(arg);
        st->done_calls++;
        st->status = status;
        st->after_calls = true;
        for (const Answer *a : st->calls) st->after_calls &= a->done_calls == 1;
      },
      s);
  e.host.in_call = false;
}

}  // namespace

TEST_CASE("echo stop completes a deferred call in flight before its done", "[echo]") {
  Echo e;
  Answer a;
  uint64_t id = 0;
  REQUIRE(e.generate({"a"}, &a, &id) == 0);
  Stopped stopped{{&a}};
  stop(e, &stopped);
  CHECK(stopped.done_calls == 0);
  e.host.run();
  CHECK(a.done_calls == 1);
  CHECK(a.status == CG_ECANCELED);
  CHECK(stopped.done_calls == 1);
  CHECK(stopped.after_calls);
}

TEST_CASE("echo stop with nothing in flight still completes later", "[echo]") {
  Echo e;
  Stopped stopped;
  stop(e, &stopped);
  CHECK(stopped.done_calls == 0);
  e.host.run();
  CHECK(stopped.done_calls == 1);
  CHECK(stopped.status == 0);
}

TEST_CASE("echo stop completes timed calls in flight before its done", "[echo]") {
  Echo e(60000);
  Answer a, b;
  uint64_t ida = 0, idb = 0;
  REQUIRE(e.generate({"a"}, &a, &ida) == 0);
  REQUIRE(e.generate({"b"}, &b, &idb) == 0);
  CHECK(ida != idb);
  Stopped stopped{{&a, &b}};
  stop(e, &stopped);
  CHECK(stopped.done_calls == 0);
  CHECK(e.host.timers.empty());
  e.host.run();
  CHECK(a.done_calls == 1);
  CHECK(a.status == CG_ECANCELED);
  CHECK(b.done_calls == 1);
  CHECK(b.status == CG_ECANCELED);
  CHECK(stopped.done_calls == 1);
  CHECK(stopped.status == 0);
  CHECK(stopped.after_calls);
  // Stopping: no new calls.
  Answer c;
  uint64_t idc = 0;
  CHECK(e.generate({"c"}, &c, &idc) == CG_ECLOSED);
  e.host.run();
  CHECK(c.done_calls == 0);
}
