-- wrk script: POST /api/chat for many distinct users, so the router does a
-- real context get/set per request instead of hitting one hot key.
local counter = 0
local users = tonumber(os.getenv("BENCH_USERS") or "10000")
local path = os.getenv("BENCH_PATH") or "/api/chat"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

request = function()
  counter = counter + 1
  local body = string.format('{"userId":"user-%d","query":"hello from the benchmark"}',
                             counter % users)
  return wrk.format("POST", path, nil, body)
end
