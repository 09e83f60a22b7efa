// What the admin API may ask of the router about conversations, and
// nothing more: the recently answered ones and a context reset. The router
// implements it; the app hands it to the admin.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <functional>
#include <string>
#include <string_view>

namespace cg {

class ConversationsPort {
 public:
  virtual ~ConversationsPort() = default;
  // {"conversations":[...]}, most recent first, optionally one channel's;
  // empty when the router does not track them.
  virtual std::string recent_json(std::string_view channel) const = 0;
  // Deletes a conversation's context from the cache, as its /reset would.
  // done(status) follows, never inside the call: 0, CG_ENOENT (nothing
  // stored), or the cache's error; or an error returns (CG_EUNAVAIL: no
  // cache) and done never runs.
  virtual int reset_conversation(std::string_view channel, std::string_view conversation,
                                 std::function<void(int)> done) = 0;
};

}  // namespace cg
