-- wrk script: token introspection for random tokens of the seeded store.
-- Arguments (after --): tokens file, Authorization header value, mode, path. Modes:
--   authlete  POST JSON {"token": ...}                       (tokenstore /api/auth/introspection)
--   standard  POST JSON {"parameters": "token=...&token_type_hint=access_token"}
--                                                            (tokenstore /api/auth/introspection/standard)
--   rfc7662   POST form token=...&token_type_hint=access_token (the peer's /token/introspection)
-- An answer below 400 whose body does not say the token is active counts as an error
-- ("bad"); wrk counts 4xx and 5xx itself (status_errors).
local tokens = {}
local auth, mode, path, expected
local threads = {}
bad = 0

local ACTIVE = 'active\\?"%s*:%s*true' -- "active":true, or escaped in responseContent
local OK = '"action"%s*:%s*"OK"'

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  for line in io.lines(args[1]) do tokens[#tokens + 1] = line end
  auth = args[2]
  mode = args[3]
  path = args[4]
  if mode == "authlete" then expected = OK
  elseif mode == "standard" or mode == "rfc7662" then expected = ACTIVE
  else error("unknown mode " .. tostring(mode)) end
  math.randomseed(os.time() * 1000 + math.floor(os.clock() * 1000000))
end

function request()
  local token = tokens[math.random(#tokens)]
  if mode == "authlete" then
    return wrk.format("POST", path, {
      ["Content-Type"] = "application/json", ["Authorization"] = auth,
    }, '{"token":"' .. token .. '"}')
  elseif mode == "standard" then
    return wrk.format("POST", path, {
      ["Content-Type"] = "application/json", ["Authorization"] = auth,
    }, '{"parameters":"token=' .. token .. '&token_type_hint=access_token"}')
  end
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/x-www-form-urlencoded", ["Authorization"] = auth,
  }, "token=" .. token .. "&token_type_hint=access_token")
end

function response(status, headers, body)
  if status < 400 and not string.find(body, expected) then bad = bad + 1 end
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
