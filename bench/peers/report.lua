-- bench/peers/report.lua: wrk prints one machine-readable line at the end of a run:
--   WRK_RESULT {"requests":N,"duration_us":N,"p50_us":N,"p99_us":N,...}
-- Used alone for a fixed URL (wrk then builds its request once, as without a script), and
-- loaded by keys.lua for random keys. Latency and request counts are wrk's own.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"max_us":%d,"mean_us":%.1f,"errors":{"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end
