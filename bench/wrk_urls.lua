-- wrk script of `make bench` (bench/measure.py): every request is the next path of a list.
--
--   wrk ... -s bench/wrk_urls.lua http://127.0.0.1:PORT -- URL_FILE THREADS EXPECT
--
-- URL_FILE holds one request path a line (the card service's URLs with their license key,
-- terminal, card number, password MD5 and a fresh amount, made by bench/bench_kkt.py).
-- Thread i of THREADS takes the lines i, i+THREADS, i+2*THREADS, ... and cycles over them, so
-- the threads never send the same request. An answer is good when its status is 2xx and its
-- body contains EXPECT; `done` prints one line, WRK_SUMMARY {json}, that bench/measure.py reads.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("index", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

function init(args)
   local file, count, index = args[1], tonumber(args[2]), tonumber(wrk.thread:get("index"))
   expect = args[3]
   paths, position, bad, status = {}, 0, 0, 0
   local line_no = 0
   for line in io.lines(file) do
      if line_no % count == index then
         paths[#paths + 1] = line
      end
      line_no = line_no + 1
   end
   if #paths == 0 then
      error("no request paths for thread " .. index .. " in " .. file)
   end
end

function request()
   position = position % #paths + 1
   return wrk.format("GET", paths[position])
end

function response(code, headers, body)
   if code < 200 or code > 299 then
      status = status + 1
   elseif not string.find(body, expect, 1, true) then
      bad = bad + 1
   end
end

function done(summary, latency, requests)
   local total_bad, total_status = 0, 0
   for _, thread in ipairs(threads) do
      total_bad = total_bad + thread:get("bad")
      total_status = total_status + thread:get("status")
   end
   local e = summary.errors
   io.write(string.format(
      'WRK_SUMMARY {"requests": %d, "duration_us": %d, "bad": %d, "status": %d, "connect": %d, ' ..
      '"read": %d, "write": %d, "timeout": %d, "p99_us": %d}\n',
      summary.requests, summary.duration, total_bad, total_status, e.connect, e.read, e.write,
      e.timeout, latency:percentile(99)))
end
