-- wrk reporter for the scale bench: report.lua's line plus wrk's own CPU time (utime + stime of
-- /proc/self/stat, in clock ticks), so the load generator's CPU per request is measured too.
done = function(summary, latency, requests)
  local ticks = -1
  local f = io.open('/proc/self/stat', 'r')
  if f then
    local rest = f:read('*a'):match('%) (.*)')
    f:close()
    local i, fields = 0, {}
    for w in rest:gmatch('%S+') do
      i = i + 1
      fields[i] = w
    end
    ticks = tonumber(fields[12]) + tonumber(fields[13])
  end
  local dur = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_s":%.3f,"rps":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"cpu_ticks":%d,' ..
    '"errors":%d,"non2xx":%d}\n',
    summary.requests, dur, summary.requests / dur,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, ticks,
    e.connect + e.read + e.write + e.timeout, e.status))
end
