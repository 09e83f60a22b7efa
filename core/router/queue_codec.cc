#include "router/queue_codec.h"

#include <charconv>
#include <cstdint>

namespace cg {
namespace {

constexpr std::string_view kMagic = "cgq1";
// Far above any platform's message; a larger length is a corrupt entry.
constexpr size_t kMaxField = size_t{64} * 1024 * 1024;

void put(std::string *out, std::string_view field) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, field.size());
  (void)ec;
  out->append(buf, end);
  out->push_back(':');
  out->append(field);
}

void put_int(std::string *out, uint64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;
  put(out, std::string_view(buf, static_cast<size_t>(end - buf)));
}

struct Reader {
  std::string_view rest;
  bool ok = true;

  std::string_view field() {
    if (!ok) return {};
    size_t len = 0;
    auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), len);
    const size_t digits = static_cast<size_t>(p - rest.data());
    if (ec != std::errc() || digits == 0 || digits >= rest.size() || rest[digits] != ':' ||
        len > kMaxField || rest.size() - digits - 1 < len) {
      ok = false;
      return {};
    }
    std::string_view f = rest.substr(digits + 1, len);
    rest.remove_prefix(digits + 1 + len);
    return f;
  }
  uint64_t integer() {
    const std::string_view f = field();
    uint64_t v = 0;
    if (ok && std::from_chars(f.data(), f.data() + f.size(), v).ec != std::errc()) ok = false;
    return v;
  }
};

}  // namespace

void queue_message_encode(const InboundMessage &msg, std::string_view channel, std::string *out) {
  out->clear();
  out->append(kMagic);
  put(out, channel);
  put_int(out, msg.conversation_type);
  put_int(out, msg.mentioned ? 1 : 0);
  put_int(out, msg.stream ? 1 : 0);
  put_int(out, static_cast<uint64_t>(msg.timestamp_ms));
  for (const std::string *s : {&msg.id, &msg.conversation_id, &msg.sender_id, &msg.sender_name,
                               &msg.text, &msg.reply_token, &msg.dedupe_key}) {
    put(out, *s);
  }
  put_int(out, msg.attachments.size());
  for (const InboundAttachment &a : msg.attachments) {
    put_int(out, a.kind);
    for (const std::string *s : {&a.url, &a.key, &a.mime, &a.name}) put(out, *s);
  }
}

bool queue_message_decode(std::string_view data, InboundMessage *msg, std::string *channel) {
  if (!data.starts_with(kMagic)) return false;
  Reader r{data.substr(kMagic.size())};
  channel->assign(r.field());
  msg->conversation_type = static_cast<uint32_t>(r.integer());
  msg->mentioned = r.integer() != 0;
  msg->stream = r.integer() != 0;
  msg->timestamp_ms = static_cast<int64_t>(r.integer());
  for (std::string *s : {&msg->id, &msg->conversation_id, &msg->sender_id, &msg->sender_name,
                         &msg->text, &msg->reply_token, &msg->dedupe_key}) {
    s->assign(r.field());
  }
  const uint64_t n = r.integer();
  if (!r.ok || n > 1000) return false;
  msg->attachments.clear();
  for (uint64_t i = 0; i < n && r.ok; ++i) {
    InboundAttachment a;
    a.kind = static_cast<uint32_t>(r.integer());
    for (std::string *s : {&a.url, &a.key, &a.mime, &a.name}) s->assign(r.field());
    msg->attachments.push_back(std::move(a));
  }
  return r.ok && !channel->empty();
}

}  // namespace cg
