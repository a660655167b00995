-- wrk script: authenticated IOC bids on POST /v1/orders, spread over many accounts.
--
--   for i in $(seq 0 63); do OFFPEAK_JWT_SECRET=... offpeak token --sub wrk-$i --role buyer; done > /tmp/wrk-tokens
--   WRK_TOKENS=/tmp/wrk-tokens wrk -t2 -c256 -d10s --latency -s load-tests/wrk/orders.lua http://127.0.0.1:18093
--
-- Each request is an IOC bid at $0.50, below every ask of the default pools: it is journaled
-- and answered after its commit, and expires at once (nothing rests, no open-order limit
-- binds). The requests are formatted once per thread and sent in turn, and no Lua runs per
-- answer, so the generator spends its CPU on the connections, not on the script. Any answer
-- other than 2xx is counted by wrk itself and printed at the end.

local body = '{"pool":"h100-sxm.us-east","gpus":1,"price":"0.50","duration_s":3600,"tif":"ioc"}'

local function load_tokens()
  local tokens = {}
  local path = os.getenv("WRK_TOKENS") or "/tmp/wrk-tokens"
  for line in io.lines(path) do
    if #line > 20 then
      tokens[#tokens + 1] = line
    end
  end
  assert(#tokens > 0, "no tokens in " .. path)
  return tokens
end

local requests = {}
local next_request = 0

-- Runs in each thread's state: one formatted request per account.
init = function(args)
  for _, token in ipairs(load_tokens()) do
    requests[#requests + 1] = wrk.format("POST", "/v1/orders", {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. token,
    }, body)
  end
end

request = function()
  next_request = next_request % #requests + 1
  return requests[next_request]
end

done = function(summary, latency, requests)
  io.write(string.format("non-2xx answers: %d\n", summary.errors.status))
  io.write(string.format("p50_ms=%.1f p99_ms=%.1f\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
