-- The requests of one benchmark run, for wrk: bench/run.py sets
--   BENCH_OP    get | list | post | put
--   BENCH_AUTH  the Authorization header ("Basic ...")
--   BENCH_IDS   a file, one line per row: "onboard_id invitation_id" (get, put) or "invitation_id" (post)
-- get:  GET /onboards/{id}, a random onboard of the load account each time
-- list: GET /onboards?limit=100
-- post: POST /onboards {invitation_id}, the next unused invitation each time (one file per run)
-- put:  PUT /onboards/{id} {invitation_id, status}: goes through the onboards in order, setting
--       "failed" on the first pass, "in_progress" on the second, and so on: every request is a real
--       status change (run.py resets them all to in_progress before each run).
-- done() prints one line "BENCH_RESULT {json}" for run.py.

local op = os.getenv("BENCH_OP")
local rows = {}
for line in io.lines(os.getenv("BENCH_IDS")) do
  local first, second = line:match("^(%S+)%s*(%S*)$")
  if first then rows[#rows + 1] = {first, second} end
end
local n = #rows
local read_headers = {["Authorization"] = os.getenv("BENCH_AUTH")}
local write_headers = {["Authorization"] = os.getenv("BENCH_AUTH"), ["Content-Type"] = "application/json"}
local i = 0
local verified = false
math.randomseed(12345)

request = function()
  if not verified then
    -- wrk calls request() once more than it sends, to check the script (script_verify_request, in
    -- the first thread: run.py always uses one): that call must not use up an id.
    verified = true
    return wrk.format("GET", "/health")
  end
  i = i + 1
  if op == "get" then
    return wrk.format("GET", "/onboards/" .. rows[math.random(n)][1], read_headers)
  elseif op == "list" then
    return wrk.format("GET", "/onboards?limit=100", read_headers)
  elseif op == "post" then
    local row = rows[(i - 1) % n + 1]
    return wrk.format("POST", "/onboards", write_headers, '{"invitation_id":"' .. row[1] .. '"}')
  else
    local row = rows[(i - 1) % n + 1]
    local status = (math.floor((i - 1) / n) % 2 == 0) and "failed" or "in_progress"
    return wrk.format("PUT", "/onboards/" .. row[1], write_headers,
                      '{"invitation_id":"' .. row[2] .. '","status":"' .. status .. '"}')
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
