-- wrk script: authenticated IOC bids on POST /v1/orders, spread over many accounts.
--
--   for i in $(seq 0 63); do OFFPEAK_JWT_SECRET=... offpeak token --sub wrk-$i --role buyer; done > /tmp/wrk-tokens
--   WRK_TOKENS=/tmp/wrk-tokens wrk -t2 -c256 -d10s --latency -s load-tests/wrk/orders.lua http://127.0.0.1:18093
--
-- Each request is an IOC bid at $0.50, below every ask of the default pools: it is journaled
-- and answered after its commit, and expires at once (nothing rests, no open-order limit
-- binds). Any answer other than 201 is counted and printed at the end.

local threads = {}

-- Runs in the main state once per thread: keeps the threads to read their counters at the end.
setup = function(thread)
  threads[#threads + 1] = thread
end

tokens = {}
counter = 0
bad = 0

local function load_tokens()
  local path = os.getenv("WRK_TOKENS") or "/tmp/wrk-tokens"
  for line in io.lines(path) do
    if #line > 20 then
      tokens[#tokens + 1] = line
    end
  end
  assert(#tokens > 0, "no tokens in " .. path)
end

load_tokens()

local body = '{"pool":"h100-sxm.us-east","gpus":1,"price":"0.50","duration_s":3600,"tif":"ioc"}'

request = function()
  counter = counter + 1
  local token = tokens[(counter % #tokens) + 1]
  return wrk.format("POST", "/v1/orders", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end

response = function(status, headers, body)
  if status ~= 201 then
    bad = bad + 1
    if bad <= 3 then
      io.stderr:write("status " .. status .. ": " .. body .. "\n")
    end
  end
end

done = function(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("bad")
  end
  io.write(string.format("non-201 answers: %d\n", total))
  io.write(string.format("p50_ms=%.1f p99_ms=%.1f\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
