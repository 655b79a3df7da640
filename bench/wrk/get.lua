-- GET load for bench/api.py: a random id from $IDS per request, its profile or (ROUTE=scores) its scores
-- (or /healthz when $ROUTE is "health"),
-- an optional bearer token, and an optional per-connection pause ($DELAY_MS) that paces a fixed rate:
-- the same pause every time, or ($ARRIVALS=random) exponentially distributed pauses of that mean.
local ids = {}
local route = os.getenv("ROUTE")
if route ~= "health" then
  for line in io.lines(os.getenv("IDS")) do ids[#ids + 1] = line end
end
local headers = {}
if os.getenv("TOKEN") then headers["Authorization"] = "Bearer " .. os.getenv("TOKEN") end
local pause = tonumber(os.getenv("DELAY_MS") or "0")
math.randomseed(42)

request = function()
  if route == "health" then return wrk.format("GET", "/healthz", headers) end
  local path = "/v1/profiles/" .. ids[math.random(#ids)]
  if route == "scores" then path = path .. "/scores" end
  return wrk.format("GET", path, headers)
end

if pause > 0 and os.getenv("ARRIVALS") == "random" then
  -- Exponential pauses (rounded to wrk's whole milliseconds, mean kept): the connections drift apart and
  -- together send like independent visitors (about Poisson), instead of a lock-step cluster per cycle.
  delay = function() return math.floor(-pause * math.log(1 - math.random()) + 0.5) end
elseif pause > 0 then
  delay = function() return pause end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.mean, e.status,
    e.connect + e.read + e.write + e.timeout))
end
