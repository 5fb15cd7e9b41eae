#!/usr/bin/env bash
# Soak: the gateway under mixed traffic for MINUTES with a reload every 10 s (the config flips a
# canary split), one backend flapping (killed for 5 s every 20 s) and IDLE keep-alive connections
# held open (benches/soak/hold.py, one request every ~40 s each so keep-alive timeouts do not
# close them). Each minute: the gateway's RSS and open descriptors, reloads applied, requests and
# errors. Memory per idle connection: RSS with the idle connections held minus RSS before, over
# IDLE, for the gateway and for NGINX (one worker, the same backends) in the same run.
#
#   benches/soak/run.sh [minutes] [idle]          # defaults: 10 10000
#
# MERIDIAN_BIN=path measures another build. Needs: nginx wrk python3 (Debian packages).
set -euo pipefail
cd "$(dirname "$0")/../.."
minutes=${1:-10}; idle=${2:-10000}
for t in nginx wrk python3 curl; do
  command -v $t >/dev/null || { echo "missing $t (apt-get install nginx wrk python3 curl)" >&2; exit 1; }
done
# Each holder, the gateway and NGINX's worker hold IDLE descriptors and some.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((idle + 1000)) ] || { echo "open-files limit $(ulimit -n) is too low for $idle idle connections" >&2; exit 1; }
[ -n "${MERIDIAN_BIN:-}" ] || cargo build --release --quiet --bin meridian
bin=${MERIDIAN_BIN:-target/release/meridian}
work=$(mktemp -d)
# The flapping backend is the flapper's child: stopped by its pid file.
trap 'rc=$?; kill $(jobs -p) 2>/dev/null; [ -f "$work/s2.pid" ] && kill "$(cat "$work/s2.pid")" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; exit $rc' EXIT

s1=127.60.1.1:8000; s2=127.60.1.2:8000; s3=127.60.1.3:8000
gw=127.60.0.1:8080; admin=127.60.0.1:9901; ngx=127.60.0.2:8080
sim() { $bin sim-backend --listen "$1" --id "$2" --model soak --version "$3" --latency 1ms --capacity 1000000 >> "$work/sim-$2.log" 2>&1 & }
sim $s1 s1 v1; sim $s3 s3 v2
flap() { while true; do sim $s2 s2 v1; echo $! > "$work/s2.pid"; sleep 15; kill "$(cat "$work/s2.pid")"; sleep 5; done; }

config() { # $1: v2's share of the default split
  cat > "$work/meridian.yaml.new" <<YAML
regions:
  - name: r
    zones: [r-a]
    gateway:
      listeners: [{ name: public, address: $gw, protocols: [http1] }]
      admin: { address: $admin }
observability: { access_log: { enabled: false } }
models:
  - name: soak
    versions:
      - { name: v1, endpoints: [{ address: $s1, region: r, zone: r-a }, { address: $s2, region: r, zone: r-a }] }
      - { name: v2, endpoints: [{ address: $s3, region: r, zone: r-a }] }
    routes:
      - name: default
        split: [{ version: v1, weight: $((100 - $1)) }, { version: v2, weight: $1 }]
        sticky: { header: x-user-id }
YAML
  mv "$work/meridian.yaml.new" "$work/meridian.yaml"
}
config 10
$bin check "$work/meridian.yaml" >/dev/null
MERIDIAN_LOG=warn $bin gateway --config "$work/meridian.yaml" --threads 1 > "$work/gw.log" 2>&1 &
gw_pid=$!
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $(ulimit -n);
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections $(ulimit -n); }
http {
  access_log off;
  keepalive_timeout 75s;
  keepalive_requests 1000000;
  upstream soak { server $s1; server $s2; server $s3; keepalive 64; }
  server {
    listen $ngx;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    location / { proxy_pass http://soak; }
  }
}
CONF
nginx -c "$work/nginx.conf" -g 'daemon off;' &
for a in $gw $ngx; do
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://$a/v2/health/live" 2>/dev/null && break; sleep 0.1; done
done
flap &

# Mixed traffic: V2 infer (sticky users), V1 predict, model metadata, an unknown model (404).
cat > "$work/mixed.lua" <<'LUA'
local n = 0
local body = '{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'
request = function()
  n = n + 1
  local k = n % 10
  local h = { ["Content-Type"] = "application/json", ["x-user-id"] = "user-" .. (n % 1000) }
  if k < 6 then return wrk.format("POST", "/v2/models/soak/infer", h, body)
  elseif k < 8 then return wrk.format("POST", "/v1/models/soak:predict", h, '{"instances":[[1,2,3,4]]}')
  elseif k < 9 then return wrk.format("GET", "/v2/models/soak", h)
  else return wrk.format("POST", "/v2/models/nope/infer", h, body) end
end
LUA
rss() { awk '/VmRSS/ {print $2}' /proc/$1/status; }
fds() { ls /proc/$1/fd | wc -l; }
ngx_worker=$(pgrep -P "$(cat "$work/nginx.pid")" | head -1)
metric() { # sum of the samples whose name and labels start with $1 and contain $2
  curl -fsS "http://$admin/metrics" | awk -v m="$1" -v c="${2:-}" 'index($1, m) == 1 && index($1, c) {s += $2} END {printf "%d", s}'; }

# Reloads every 10 s, flipping v2's share between 10 and 30.
( share=10; while true; do sleep 10; share=$((40 - share)); config $share; curl -fsS -X POST "http://$admin/reload" >/dev/null || true; done ) &

wrk -t1 -c8 -d"${minutes}m" -s "$work/mixed.lua" "http://$gw" > "$work/wrk.txt" 2>&1 &
wrk_pid=$!
sleep 30
before_gw=$(rss $gw_pid); before_ngx=$(rss "$ngx_worker")
python3 benches/soak/hold.py "$gw" "$idle" > "$work/hold-gw.txt" 2>&1 &
python3 benches/soak/hold.py "$ngx" "$idle" > "$work/hold-ngx.txt" 2>&1 &
for f in hold-gw hold-ngx; do
  for _ in $(seq 600); do grep -q held "$work/$f.txt" 2>/dev/null && break; sleep 0.5; done
  grep -q held "$work/$f.txt" || { echo "$f could not open $idle connections:"; cat "$work/$f.txt"; exit 1; }
done
sleep 5
after_gw=$(rss $gw_pid); after_ngx=$(rss "$ngx_worker")
echo "| | RSS before (KiB) | RSS with $idle idle (KiB) | per idle connection |"
echo "| --- | --- | --- | --- |"
echo "| meridian | $before_gw | $after_gw | $(( (after_gw - before_gw) * 1024 / idle )) B |"
echo "| nginx (worker) | $before_ngx | $after_ngx | $(( (after_ngx - before_ngx) * 1024 / idle )) B |"
echo
echo "| minute | gateway RSS (KiB) | open fds | reloads ok | reloads failed | requests | 5xx |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for m in $(seq 1 $((minutes - 1))); do
  echo "| $m | $(rss $gw_pid) | $(fds $gw_pid) | $(metric 'meridian_config_reloads_total{result="success"') | $(metric 'meridian_config_reloads_total{result="failure"') | $(metric inference_requests_total) | $(metric 'inference_requests_total{' 'status="5') |"
  sleep 60
done
wait $wrk_pid || true
echo
echo "idle connections still open at the end: gateway $(tail -1 "$work/hold-gw.txt"), nginx $(tail -1 "$work/hold-ngx.txt")"
grep -E "Requests/sec|requests in|Non-2xx|Socket errors" "$work/wrk.txt"
