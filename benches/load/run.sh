#!/usr/bin/env bash
# Gateway throughput and latency side by side: Meridian vs NGINX vs HAProxy, each with one worker,
# keep-alive to the same simulated backend, small V2 inference bodies, in one run (rounds
# interleaved, because shared machines are noisy). Prints a markdown table for benches/README.md.
#
#   benches/load/run.sh [seconds-per-run] [rounds] [connections]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}; rounds=${2:-3}; conns=${3:-32}
for t in nginx haproxy wrk; do command -v $t >/dev/null || { echo "missing $t (apt-get install nginx haproxy wrk)" >&2; exit 1; }; done
cargo build --release --quiet --bin meridian
bin=target/release/meridian
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

backend=127.50.1.1:8000
$bin sim-backend --listen $backend --id bench --model bench --version v1 --latency 0ms --capacity 1000000 > "$work/sim.log" 2>&1 &

cat > "$work/meridian.yaml" <<YAML
regions:
  - name: r
    zones: [r-a]
    gateway:
      listeners: [{ name: public, address: 127.50.0.1:8080, protocols: [http1] }]
      admin: { address: 127.50.0.1:9901 }
observability: { access_log: { enabled: false } }
models:
  - name: bench
    versions:
      - name: v1
        endpoints: [{ address: $backend, region: r, zone: r-a }]
YAML
MERIDIAN_LOG=warn $bin gateway --config "$work/meridian.yaml" --threads 1 > "$work/gw.log" 2>&1 &

cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream backend { server $backend; keepalive 128; }
  server {
    listen 127.50.0.2:8080;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
nginx -c "$work/nginx.conf" -g 'daemon off;' &

cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.50.0.3:8080
  default_backend be
backend be
  server s1 $backend
CONF
haproxy -f "$work/haproxy.cfg" &

cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"id":"1","inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
LUA

path=/v2/models/bench/infer
for url in http://$backend http://127.50.0.1:8080 http://127.50.0.2:8080 http://127.50.0.3:8080; do
  for _ in $(seq 1 100); do curl -sf -o /dev/null -X POST "$url$path" -d '{}' && break; sleep 0.1; done
done

declare -A rps p50 p99
run() { # name url
  local out; out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$work/post.lua" "$2$path")
  local r; r=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  local a; a=$(awk '$1=="50%" {print $2}' <<<"$out")
  local b; b=$(awk '$1=="99%" {print $2}' <<<"$out")
  local errs; errs=$(awk '/Non-2xx|Socket errors/' <<<"$out")
  [ -z "$errs" ] || echo "  $1: $errs" >&2
  rps[$1]+="$r "; p50[$1]+="$a "; p99[$1]+="$b "
  echo "  round $round $1: $r req/s, p50 $a, p99 $b" >&2
}
for round in $(seq 1 "$rounds"); do
  run direct http://$backend
  run meridian http://127.50.0.1:8080
  run nginx http://127.50.0.2:8080
  run haproxy http://127.50.0.3:8080
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
to_ms() { awk '{v=$1; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; printf "%.3f\n", v}'; }
m_rps=$(echo "${rps[meridian]}" | median)
echo
echo "| target | req/s (median of $rounds) | p50 ms | p99 ms | Meridian / target |"
echo "| --- | --- | --- | --- | --- |"
for t in direct meridian nginx haproxy; do
  r=$(echo "${rps[$t]}" | median)
  a=$(echo "${p50[$t]}" | tr ' ' '\n' | grep -v '^$' | to_ms | median)
  b=$(echo "${p99[$t]}" | tr ' ' '\n' | grep -v '^$' | to_ms | median)
  ratio=$(awk -v m="$m_rps" -v r="$r" 'BEGIN {printf "%.2f", m/r}')
  echo "| $t | $r | $a | $b | $ratio |"
done
