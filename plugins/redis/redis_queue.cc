// redis.so's durable queue (ABI 1.6, cg_queue_ops_t) on Redis Streams:
// partition p is the stream <prefix>q:<p> with one consumer group,
// "chatgate"; its lease is <prefix>q:<p>:owner; live instances heartbeat
// into the sorted set <prefix>q:members; dead letters go to <prefix>q:dead.
// Every op that touches more than one key is one Lua script, so a crash of
// chatgate (or a lost connection) never leaves half of it done.
//
// THREAD: every entry point runs on the host's loop thread.
#include <array>
#include <charconv>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "redis_conn.h"

namespace redis_plugin {
namespace {

constexpr std::string_view kGroup = "chatgate";

// KEYS: stream, [dedupe key]. ARGV: payload, dedupe ttl ms, max length.
// -1: a duplicate; -2: the partition is full; else the entry's id. The
// length check refuses rather than trims: acknowledged entries are deleted,
// so the length is what is still to answer, and trimming would lose it.
constexpr std::string_view kEnqueue = R"(
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -2 end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'm', ARGV[1])
if KEYS[2] then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end
return id
)";

// KEYS: owner key, stream. ARGV: owner, ttl ms, group. 1: renewed, 2:
// taken, 0: held by another. The group is made on every call (an error
// when it exists, ignored): a Redis restarted without persistence lost it.
constexpr std::string_view kLease = R"(
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.pcall('XGROUP', 'CREATE', KEYS[2], ARGV[3], '0', 'MKSTREAM')
if cur then return 1 end
return 2
)";

// KEYS: owner key. ARGV: owner. 1: released, 0: not held by owner.
constexpr std::string_view kRelease = R"(
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) return 1 end
return 0
)";

// KEYS: stream. ARGV: group, consumer, min idle ms, max. Claims, in id
// order, pending entries of other consumers idle that long: {id, fields,
// deliveries}. An entry deleted meanwhile is acknowledged and skipped.
constexpr std::string_view kClaim = R"(
local p = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], '-', '+', 1000)
local out = {}
for _, e in ipairs(p) do
  if e[2] ~= ARGV[2] then
    local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, e[1])
    if c[1] and c[1][2] then
      out[#out + 1] = {c[1][1], c[1][2], e[4] + 1}
    else
      redis.call('XACK', KEYS[1], ARGV[1], e[1])
    end
    if #out >= tonumber(ARGV[4]) then break end
  end
end
return out
)";

// KEYS: stream. ARGV: group, consumer, id. The new delivery count, or -1
// when the entry is no longer pending.
constexpr std::string_view kRetry = R"(
local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3])
if not c[1] then return -1 end
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not p[1] then return -1 end
return p[1][4]
)";

// KEYS: stream, records... ARGV: group, record ttl ms, ids...
constexpr std::string_view kAck = R"(
for i = 2, #KEYS do redis.call('SET', KEYS[i], '1', 'PX', ARGV[2]) end
redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 3))
redis.call('XDEL', KEYS[1], unpack(ARGV, 3))
return 1
)";
// Ids acknowledged by one script at the most (Lua's unpack has a stack
// limit); a larger batch is refused and the host sends smaller ones.
constexpr size_t kAckMax = 1000;

// KEYS: stream, dead-letter stream. ARGV: group, id, payload, reason,
// partition, max length of the dead letters.
constexpr std::string_view kDead = R"(
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'm', ARGV[3], 'reason', ARGV[4],
           'partition', ARGV[5], 'id', ARGV[2])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
)";

// KEYS: members. ARGV: member, ttl ms. Live members after the heartbeat.
constexpr std::string_view kMembers = R"(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]) * 10)
return redis.call('ZCARD', KEYS[1])
)";

// KEYS: dead-letter stream. ARGV: prefix of the streams, partitions, group.
// {length, pending, oldest pending age ms, dead letters}.
constexpr std::string_view kStats = R"(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local len, pending, oldest = 0, 0, 0
for p = 0, tonumber(ARGV[2]) - 1 do
  local k = ARGV[1] .. p
  if redis.call('EXISTS', k) == 1 then
    len = len + redis.call('XLEN', k)
    local s = redis.pcall('XPENDING', k, ARGV[3])
    if type(s) == 'table' and s[1] and s[1] > 0 then
      pending = pending + s[1]
      local ms = tonumber(string.match(s[2], '^(%d+)'))
      if ms and now - ms > oldest then oldest = now - ms end
    end
  end
end
return {len, pending, oldest, redis.call('XLEN', KEYS[1])}
)";

constexpr int64_t kDeadLettersMax = 100000;

cg_str_t lit(std::string_view s) { return cg_str_t{s.data(), s.size()}; }

std::string stream_key(const Redis *r, uint32_t partition) {
  return r->prefix + "q:" + std::to_string(partition);
}

// EVAL script numkeys keys... args...: one command, all strings.
int eval(Redis *r, std::unique_ptr<Op> op, std::string_view script, std::span<const cg_str_t> keys,
         std::span<const cg_str_t> args) {
  std::vector<const char *> argv;
  std::vector<size_t> lens;
  const std::string nkeys = std::to_string(keys.size());
  for (cg_str_t s : {lit("EVAL"), lit(script), cs(nkeys)}) {
    argv.push_back(s.ptr);
    lens.push_back(s.len);
  }
  for (std::span<const cg_str_t> list : {keys, args}) {
    for (cg_str_t s : list) {
      argv.push_back(s.ptr != nullptr ? s.ptr : "");
      lens.push_back(s.len);
    }
  }
  return redis_send(r, std::move(op), static_cast<int>(argv.size()), argv.data(), lens.data());
}

int eval(Redis *r, std::unique_ptr<Op> op, std::string_view script,
         std::initializer_list<cg_str_t> keys, std::initializer_list<cg_str_t> args) {
  return eval(r, std::move(op), script, std::span<const cg_str_t>(keys.begin(), keys.size()),
              std::span<const cg_str_t>(args.begin(), args.size()));
}

std::unique_ptr<Op> make_op(Op::Kind kind, void *arg) {
  auto op = std::unique_ptr<Op>(new (std::nothrow) Op);
  if (op) {
    op->kind = kind;
    op->arg = arg;
  }
  return op;
}

// EVAL for an op answered through a cg_cache_cb.
int eval_cb(Redis *r, Op::Kind kind, cg_cache_cb cb, void *arg, std::string_view script,
            std::initializer_list<cg_str_t> keys, std::initializer_list<cg_str_t> args) {
  if (cb == nullptr) return CG_EINVAL;
  auto op = make_op(kind, arg);
  if (!op) return CG_ENOMEM;
  op->cb = cb;
  return eval(r, std::move(op), script, std::span<const cg_str_t>(keys.begin(), keys.size()),
              std::span<const cg_str_t>(args.begin(), args.size()));
}

int q_enqueue(void *state, uint32_t partition, cg_str_t dedupe_key, uint64_t dedupe_ttl_ms,
              cg_str_t payload, cg_cache_cb cb, void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  const Op::Kind kind = Op::kEnqueue;
  const std::string stream = stream_key(r, partition);
  const std::string ttl = std::to_string(dedupe_ttl_ms);
  const std::string max = std::to_string(r->queue_max_length);
  if (dedupe_key.len == 0) {
    return eval_cb(r, kind, cb, arg, kEnqueue, {cs(stream)}, {payload, cs(ttl), cs(max)});
  }
  const std::string dedupe = r->prefix + std::string(sv(dedupe_key));
  return eval_cb(r, kind, cb, arg, kEnqueue, {cs(stream), cs(dedupe)}, {payload, cs(ttl), cs(max)});
}

int q_lease(void *state, uint32_t partition, cg_str_t owner, uint64_t ttl_ms, cg_cache_cb cb,
            void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  const Op::Kind kind = Op::kLease;
  const std::string stream = stream_key(r, partition);
  const std::string key = stream + ":owner";
  const std::string ttl = std::to_string(ttl_ms);
  return eval_cb(r, kind, cb, arg, kLease, {cs(key), cs(stream)}, {owner, cs(ttl), lit(kGroup)});
}

int q_release(void *state, uint32_t partition, cg_str_t owner, cg_cache_cb cb, void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  const Op::Kind kind = Op::kRelease;
  const std::string key = stream_key(r, partition) + ":owner";
  return eval_cb(r, kind, cb, arg, kRelease, {cs(key)}, {owner});
}

int q_read(void *state, const uint32_t *partitions, size_t partition_count, cg_str_t consumer,
           uint32_t max, uint64_t block_ms, cg_queue_entries_cb cb, void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  if (cb == nullptr || partition_count == 0 || max == 0) return CG_EINVAL;
  auto op = make_op(Op::kEntries, arg);
  if (!op) return CG_ENOMEM;
  op->entries_cb = cb;
  op->read = true;
  std::vector<std::string> keys;
  keys.reserve(partition_count);
  for (size_t i = 0; i < partition_count; ++i) keys.push_back(stream_key(r, partitions[i]));
  const std::string count = std::to_string(max);
  const std::string block = std::to_string(block_ms);
  std::vector<cg_str_t> args = {lit("XREADGROUP"), lit("GROUP"), lit(kGroup),
                                consumer,          lit("COUNT"), cs(count),
                                lit("BLOCK"),      cs(block),    lit("STREAMS")};
  for (const std::string &k : keys) args.push_back(cs(k));
  for (size_t i = 0; i < partition_count; ++i) args.push_back(lit(">"));
  std::vector<const char *> argv;
  std::vector<size_t> lens;
  for (cg_str_t s : args) {
    argv.push_back(s.ptr);
    lens.push_back(s.len);
  }
  // On the reader connection: a BLOCK holds its connection until it ends.
  return redis_send(r->reader ? r->reader.get() : r, std::move(op), static_cast<int>(argv.size()),
                    argv.data(), lens.data(), block_ms);
}

int q_claim(void *state, uint32_t partition, cg_str_t consumer, uint64_t min_idle_ms, uint32_t max,
            cg_queue_entries_cb cb, void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  if (cb == nullptr || max == 0) return CG_EINVAL;
  auto op = make_op(Op::kEntries, arg);
  if (!op) return CG_ENOMEM;
  op->entries_cb = cb;
  op->partition = partition;
  const std::string stream = stream_key(r, partition);
  const std::string idle = std::to_string(min_idle_ms);
  const std::string count = std::to_string(max);
  return eval(r, std::move(op), kClaim, {cs(stream)}, {lit(kGroup), consumer, cs(idle), cs(count)});
}

int q_retry(void *state, uint32_t partition, cg_str_t id, cg_str_t consumer, cg_cache_cb cb,
            void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  const Op::Kind kind = Op::kRetry;
  const std::string stream = stream_key(r, partition);
  return eval_cb(r, kind, cb, arg, kRetry, {cs(stream)}, {lit(kGroup), consumer, id});
}

int q_ack(void *state, uint32_t partition, const cg_str_t *ids, const cg_str_t *record_keys,
          size_t count, uint64_t record_ttl_ms, cg_cache_cb cb, void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  if (cb == nullptr || ids == nullptr || count == 0 || count > kAckMax) return CG_EINVAL;
  auto op = make_op(Op::kAck, arg);
  if (!op) return CG_ENOMEM;
  op->cb = cb;
  const std::string stream = stream_key(r, partition);
  const std::string ttl = std::to_string(record_ttl_ms);
  std::vector<std::string> records;
  for (size_t i = 0; record_keys != nullptr && i < count; ++i) {
    if (record_keys[i].len > 0) records.push_back(r->prefix + std::string(sv(record_keys[i])));
  }
  std::vector<cg_str_t> keys{cs(stream)};
  for (const std::string &k : records) keys.push_back(cs(k));
  std::vector<cg_str_t> args{lit(kGroup), cs(ttl)};
  args.insert(args.end(), ids, ids + count);
  return eval(r, std::move(op), kAck, keys, args);
}

int q_dead_letter(void *state, uint32_t partition, cg_str_t id, cg_str_t payload, cg_str_t reason,
                  cg_cache_cb cb, void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  const Op::Kind kind = Op::kAck;
  const std::string stream = stream_key(r, partition);
  const std::string dead = r->prefix + "q:dead";
  const std::string part = std::to_string(partition);
  const std::string max = std::to_string(kDeadLettersMax);
  return eval_cb(r, kind, cb, arg, kDead, {cs(stream), cs(dead)},
                 {lit(kGroup), id, payload, reason, cs(part), cs(max)});
}

int q_members(void *state, cg_str_t member, uint64_t ttl_ms, cg_cache_cb cb, void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  const Op::Kind kind = Op::kMembers;
  const std::string key = r->prefix + "q:members";
  const std::string ttl = std::to_string(ttl_ms);
  return eval_cb(r, kind, cb, arg, kMembers, {cs(key)}, {member, cs(ttl)});
}

int q_stats(void *state, uint32_t partition_count, cg_queue_stats_cb cb, void *arg) noexcept {
  auto *r = static_cast<Redis *>(state);
  if (cb == nullptr) return CG_EINVAL;
  auto op = make_op(Op::kStats, arg);
  if (!op) return CG_ENOMEM;
  op->stats_cb = cb;
  const std::string dead = r->prefix + "q:dead";
  const std::string streams = r->prefix + "q:";
  const std::string n = std::to_string(partition_count);
  return eval(r, std::move(op), kStats, {cs(dead)}, {cs(streams), cs(n), lit(kGroup)});
}

// The payload of a field list {"m", payload, ...}; empty when absent.
cg_str_t payload_of(const redisReply *fields) {
  if (fields == nullptr || fields->type != REDIS_REPLY_ARRAY) return cg_str_t{nullptr, 0};
  for (size_t i = 0; i + 1 < fields->elements; i += 2) {
    const redisReply *k = fields->element[i];
    const redisReply *v = fields->element[i + 1];
    if (k->type == REDIS_REPLY_STRING && std::string_view(k->str, k->len) == "m" &&
        v->type == REDIS_REPLY_STRING) {
      return cg_str_t{v->str, v->len};
    }
  }
  return cg_str_t{nullptr, 0};
}

uint32_t partition_of(const Redis *r, std::string_view key) {
  const std::string_view head = std::string_view(r->prefix);
  uint32_t p = 0;
  if (key.size() > head.size() + 2) {
    key.remove_prefix(head.size() + 2);  // "<prefix>q:"
    std::from_chars(key.data(), key.data() + key.size(), p);
  }
  return p;
}

void add_entry(std::vector<cg_queue_entry_t> *out, uint32_t partition, const redisReply *e,
               uint32_t deliveries) {
  if (e->type != REDIS_REPLY_ARRAY || e->elements < 2) return;
  const redisReply *id = e->element[0];
  if (id->type != REDIS_REPLY_STRING) return;
  cg_queue_entry_t q{};
  q.struct_size = sizeof q;
  q.partition = partition;
  q.id = cg_str_t{id->str, id->len};
  q.payload = payload_of(e->element[1]);
  q.deliveries = deliveries;
  out->push_back(q);
}

void answer_entries(const Op &op, const redisReply &rep) {
  std::vector<cg_queue_entry_t> entries;
  if (op.read) {
    // nil (the wait ended empty) or [[stream, [[id, fields], ...]], ...]
    if (rep.type == REDIS_REPLY_ARRAY) {
      for (size_t s = 0; s < rep.elements; ++s) {
        const redisReply *st = rep.element[s];
        if (st->type != REDIS_REPLY_ARRAY || st->elements < 2) continue;
        const uint32_t p =
            partition_of(op.r, std::string_view(st->element[0]->str, st->element[0]->len));
        const redisReply *list = st->element[1];
        for (size_t i = 0; list->type == REDIS_REPLY_ARRAY && i < list->elements; ++i) {
          add_entry(&entries, p, list->element[i], 1);
        }
      }
    }
  } else if (rep.type == REDIS_REPLY_ARRAY) {
    // [[id, fields, deliveries], ...]
    for (size_t i = 0; i < rep.elements; ++i) {
      const redisReply *e = rep.element[i];
      const uint32_t n = e->type == REDIS_REPLY_ARRAY && e->elements >= 3 &&
                                 e->element[2]->type == REDIS_REPLY_INTEGER
                             ? static_cast<uint32_t>(e->element[2]->integer)
                             : 1;
      add_entry(&entries, op.partition, e, n);
    }
  }
  op.entries_cb(op.arg, 0, entries.data(), entries.size());
}

}  // namespace

void queue_answer(const Op &op, const redisReply &rep) {
  if (rep.type == REDIS_REPLY_ERROR) {
    // A script error or NOGROUP: the host logs the status and tries later.
    op.r->log(CG_LOG_DEBUG, "redis queue command failed: " + std::string(rep.str, rep.len));
    op.fail(CG_EIO);
    return;
  }
  const auto none = cg_str_t{nullptr, 0};
  switch (op.kind) {
    case Op::kEnqueue:
      if (rep.type == REDIS_REPLY_INTEGER) {
        op.cb(op.arg, rep.integer == -1 ? CG_EEXIST : CG_EBUSY, none);
      } else {
        op.cb(op.arg, 0, rep.type == REDIS_REPLY_STRING ? cg_str_t{rep.str, rep.len} : none);
      }
      return;
    case Op::kLease:
      op.cb(op.arg, rep.type == REDIS_REPLY_INTEGER && rep.integer > 0 ? 0 : CG_EBUSY, none);
      return;
    case Op::kRelease:
      op.cb(op.arg, rep.type == REDIS_REPLY_INTEGER && rep.integer == 1 ? 0 : CG_ENOENT, none);
      return;
    case Op::kRetry: {
      if (rep.type != REDIS_REPLY_INTEGER || rep.integer < 0) {
        op.cb(op.arg, CG_ENOENT, none);
        return;
      }
      const std::string n = std::to_string(rep.integer);
      op.cb(op.arg, 0, cs(n));
      return;
    }
    case Op::kMembers: {
      const std::string n = std::to_string(rep.type == REDIS_REPLY_INTEGER ? rep.integer : 1);
      op.cb(op.arg, 0, cs(n));
      return;
    }
    case Op::kEntries:
      answer_entries(op, rep);
      return;
    case Op::kStats: {
      cg_queue_stats_t s{};
      s.struct_size = sizeof s;
      auto num = [&](size_t i) -> uint64_t {
        return rep.type == REDIS_REPLY_ARRAY && i < rep.elements &&
                       rep.element[i]->type == REDIS_REPLY_INTEGER && rep.element[i]->integer > 0
                   ? static_cast<uint64_t>(rep.element[i]->integer)
                   : 0;
      };
      s.length = num(0);
      s.pending = num(1);
      s.oldest_pending_ms = num(2);
      s.dead_letters = num(3);
      op.stats_cb(op.arg, 0, &s);
      return;
    }
    default:
      op.cb(op.arg, 0, none);
      return;
  }
}

const cg_queue_ops_t kQueueOps = {
    sizeof(cg_queue_ops_t), q_enqueue, q_lease, q_release, q_read, q_claim, q_retry, q_ack,
    q_dead_letter,          q_members, q_stats,
};

}  // namespace redis_plugin
