-- wrk script: POST /api/chat for many distinct users, so the router does a
-- real context get/set per request instead of hitting one hot key. Each wrk
-- thread has its own users: two threads sending for one user at once would
-- be serialized by the router (one conversation answers in order).
local counter = 0
local users = tonumber(os.getenv("BENCH_USERS") or "10000")
local path = os.getenv("BENCH_PATH") or "/api/chat"
local next_thread = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function setup(thread)
  thread:set("thread_id", next_thread)
  next_thread = next_thread + 1
end

request = function()
  counter = counter + 1
  local body = string.format('{"userId":"user-%d-%d","query":"hello from the benchmark"}',
                             thread_id or 0, counter % users)
  return wrk.format("POST", path, nil, body)
end
