// The conversations the router answered lately, for the admin page: per
// conversation its channel, messages, context turns, last reply latency and
// time, and (kept only when admin.showContent is true) the last question and
// answer. An LRU of kMaxConversations; memory stays bounded whatever the
// traffic.
//
// THREAD: not thread-safe; loop thread only.
#pragma once

#include <cstdint>
#include <list>
#include <string>
#include <string_view>
#include <unordered_map>

namespace cg {

class RecentConversations {
 public:
  static constexpr size_t kMaxConversations = 200;
  static constexpr size_t kMaxTextBytes = 500;  // of each kept question and answer

  explicit RecentConversations(bool keep_content) : keep_content_(keep_content) {}

  // A reply went out. `turns`: the context turns stored with it.
  void record(std::string_view channel, std::string_view conversation, std::string_view question,
              std::string_view answer, bool failed, uint64_t latency_ms, int64_t unix_ms,
              size_t turns);
  // Turning it off also forgets the text kept so far.
  void set_keep_content(bool keep);
  // The conversation's context was reset: its turn count drops to 0.
  void reset(std::string_view channel, std::string_view conversation);

  // {"conversations":[...]}, most recent first, optionally one channel's.
  std::string to_json(std::string_view channel) const;

 private:
  struct Entry {
    std::string channel, conversation, question, answer;
    uint64_t messages = 0, failed = 0, last_latency_ms = 0;
    int64_t last_unix_ms = 0;
    size_t turns = 0;
  };
  static void make_key(std::string_view channel, std::string_view conversation, std::string *out);

  bool keep_content_;
  std::list<Entry> entries_;  // most recent first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  std::string key_buf_, old_key_buf_;  // reused: no allocation per lookup
};

}  // namespace cg
