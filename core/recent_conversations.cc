#include "recent_conversations.h"

#include "json.h"

namespace cg {
namespace {

// At most `max` bytes, not cutting a UTF-8 sequence in two.
std::string_view clip(std::string_view s, size_t max) {
  if (s.size() <= max) return s;
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

}  // namespace

std::string RecentConversations::key(std::string_view channel, std::string_view conversation) {
  std::string k(channel);
  k.push_back('\0');
  k.append(conversation);
  return k;
}

void RecentConversations::record(std::string_view channel, std::string_view conversation,
                                 std::string_view question, std::string_view answer, bool failed,
                                 uint64_t latency_ms, int64_t unix_ms, size_t turns) {
  const std::string k = key(channel, conversation);
  auto it = index_.find(k);
  if (it != index_.end()) {
    entries_.splice(entries_.begin(), entries_, it->second);
  } else {
    Entry fresh;
    fresh.channel.assign(channel);
    fresh.conversation.assign(conversation);
    entries_.push_front(std::move(fresh));
    index_.emplace(k, entries_.begin());
    if (entries_.size() > kMaxConversations) {
      const Entry &last = entries_.back();
      index_.erase(key(last.channel, last.conversation));
      entries_.pop_back();
    }
  }
  Entry &e = entries_.front();
  e.messages++;
  if (failed) e.failed++;
  e.last_latency_ms = latency_ms;
  e.last_unix_ms = unix_ms;
  e.turns = turns;
  if (keep_content_) {
    e.question.assign(clip(question, kMaxTextBytes));
    e.answer.assign(clip(answer, kMaxTextBytes));
  }
}

void RecentConversations::reset(std::string_view channel, std::string_view conversation) {
  auto it = index_.find(key(channel, conversation));
  if (it != index_.end()) it->second->turns = 0;
}

std::string RecentConversations::to_json(std::string_view channel) const {
  std::string out = "{\"conversations\":[";
  bool first = true;
  for (const Entry &e : entries_) {
    if (!channel.empty() && e.channel != channel) continue;
    if (!first) out += ",";
    first = false;
    out += "{\"channel\":" + json_quote(e.channel) +
           ",\"conversation\":" + json_quote(e.conversation) +
           ",\"messages\":" + std::to_string(e.messages) +
           ",\"failed\":" + std::to_string(e.failed) + ",\"turns\":" + std::to_string(e.turns) +
           ",\"lastLatencyMs\":" + std::to_string(e.last_latency_ms) +
           ",\"lastAt\":" + std::to_string(e.last_unix_ms);
    if (keep_content_) {
      out += ",\"question\":" + json_quote(e.question) + ",\"answer\":" + json_quote(e.answer);
    }
    out += "}";
  }
  return out + "]}";
}

}  // namespace cg
