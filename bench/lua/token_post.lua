-- POST a client_credentials token request with client_secret_basic (RFC 6749 §2.3.1, §4.4).
-- BENCH_BASIC: base64("client_id:client_secret"); BENCH_BODY: the form (default below).
-- done() prints one machine-readable line for bench/authlib_choice.py.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or "grant_type=client_credentials"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. (os.getenv("BENCH_BASIC") or "")

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"non2xx":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,' ..
    '"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
