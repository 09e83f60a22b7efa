#include "router/recent_conversations.h"

#include <iterator>

#include "base/json.h"

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

void RecentConversations::make_key(std::string_view channel, std::string_view conversation,
                                   std::string *out) {
  out->assign(channel);
  out->push_back('\0');
  out->append(conversation);
}

void RecentConversations::record(std::string_view channel, std::string_view conversation,
                                 std::string_view question, std::string_view answer, bool failed,
                                 uint64_t latency_ms, int64_t unix_ms, size_t turns) {
  // On the reply path of every message: a conversation already listed, or
  // one that takes the oldest's place once the list is full, costs no
  // allocation (the key buffer, the list node and the index node are reused).
  make_key(channel, conversation, &key_buf_);
  auto it = index_.find(key_buf_);
  if (it != index_.end()) {
    entries_.splice(entries_.begin(), entries_, it->second);
  } else if (entries_.size() >= kMaxConversations) {
    entries_.splice(entries_.begin(), entries_, std::prev(entries_.end()));
    Entry &e = entries_.front();
    make_key(e.channel, e.conversation, &old_key_buf_);
    auto node = index_.extract(old_key_buf_);
    node.key() = key_buf_;
    node.mapped() = entries_.begin();
    index_.insert(std::move(node));
    e.channel.assign(channel);
    e.conversation.assign(conversation);
    e.question.clear();
    e.answer.clear();
    e.messages = e.failed = 0;
  } else {
    Entry fresh;
    fresh.channel.assign(channel);
    fresh.conversation.assign(conversation);
    entries_.push_front(std::move(fresh));
    index_.emplace(key_buf_, entries_.begin());
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

void RecentConversations::set_keep_content(bool keep) {
  keep_content_ = keep;
  if (keep) return;
  for (Entry &e : entries_) {
    e.question.clear();
    e.question.shrink_to_fit();
    e.answer.clear();
    e.answer.shrink_to_fit();
  }
}

void RecentConversations::reset(std::string_view channel, std::string_view conversation) {
  make_key(channel, conversation, &key_buf_);
  auto it = index_.find(key_buf_);
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
