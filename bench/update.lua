-- wrk script: POST /auth/token/update for random tokens of the seeded store.
-- Arguments (after --): tokens file, Authorization header value, path. An answer below
-- 400 without "action":"OK" counts as an error ("bad"; the no-op answers it too).
local tokens = {}
local auth, path
local threads = {}
bad = 0

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  auth = args[2]
  path = args[3] or "/auth/token/update"
  math.randomseed(os.time() * 1000 + math.floor(os.clock() * 1000000))
end

function request()
  local token = tokens[math.random(#tokens)]
  local expires = (os.time() + 3600) * 1000 + math.random(999)
  local body = '{"accessToken":"' .. token .. '","accessTokenExpiresAt":' .. expires .. '}'
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = auth,
  }, body)
end

function response(status, headers, body)
  if status < 400 and not string.find(body, '"action"%s*:%s*"OK"') then bad = bad + 1 end
end

function done(summary, latency, requests)
  local failures = 0
  for _, thread in ipairs(threads) do failures = failures + thread:get("bad") end
  -- One machine-readable line for bench/run.py.
  io.write(string.format(
    "BENCH requests=%d errors=%d status_errors=%d bad=%d rps=%.1f p50_us=%d p99_us=%d\n",
    summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, failures,
    summary.requests / (summary.duration / 1000000),
    latency:percentile(50), latency:percentile(99)))
end
