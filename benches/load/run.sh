#!/usr/bin/env bash
# The gateway against NGINX and HAProxy, side by side in one run (rounds interleaved, because shared
# machines are noisy), each with one worker, keep-alive to the same backends, a 96-byte V2 POST:
#
#   - closed loop (wrk): requests per second, and for the proxy process alone CPU time per request
#     (perf task-clock) and syscalls per request (perf raw_syscalls:sys_enter), over the same window;
#   - open loop (benches/openloop.rs): latency percentiles at a fixed rate, half of NGINX's
#     closed-loop rate in the first round, the same rate for every proxy, with the proxy's CPU per
#     request over the same run and each round's p99 ratio (Meridian's over the peer's, measured
#     seconds apart, so the machine's drift between rounds cancels);
#   - both backends: `meridian sim-backend` and an NGINX fixed response (`return 200`), routed by
#     path (/v2/models/bench/... and /v2/models/fixed/...) by all three proxies;
#   - rows for HTTP/2 downstream (h2c, h2load) and TLS 1.3 downstream (HTTP/1.1, wrk) to the fixed
#     backend, and for gRPC (h2c on both legs: h2load to each proxy, an NGINX h2c backend answering
#     with a grpc-status trailer; NGINX by grpc_pass, HAProxy by `proto h2`).
#
#   benches/load/run.sh [seconds-per-run] [rounds] [connections]
#
# MERIDIAN_BIN=path measures another build of the gateway (an earlier commit's, say) in the same way.
# OPEN_RATE=n runs the open loop alone, at n req/s: more rounds of the latency comparison, which
# needs them (its p99 ratios spread widest from round to round).
#
# Prints markdown tables for benches/README.md. Needs: nginx haproxy wrk nghttp2-client (h2load)
# linux-perf openssl (apt-get install ...).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}; rounds=${2:-3}; conns=${3:-32}
open_rate=${OPEN_RATE:-}
for t in nginx haproxy wrk h2load perf openssl; do
  command -v $t >/dev/null || { echo "missing $t (apt-get install nginx haproxy wrk nghttp2-client linux-perf openssl)" >&2; exit 1; }
done
[ -n "${MERIDIAN_BIN:-}" ] || cargo build --release --quiet --bin meridian
cargo build --release --quiet --bench openloop
bin=${MERIDIAN_BIN:-target/release/meridian}
openloop=$(ls -t target/release/deps/openloop-* | grep -v '\.d$' | head -1)
work=$(mktemp -d)
trap 'rc=$?; kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; exit $rc' EXIT

sim=127.50.1.1:8000
fixed=127.50.1.2:8000
grpcb=127.50.1.3:8000
body='{"id":"1","inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
answer='{"model_name":"fixed","model_version":"v1","outputs":[{"name":"output-0","shape":[1],"datatype":"FP32","data":[1.0]}]}'
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench.local -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" > "$work/both.pem"

# Backends.
$bin sim-backend --listen $sim --id bench --model bench --version v1 --latency 0ms --capacity 1000000 > "$work/sim.log" 2>&1 &
cat > "$work/fixed.conf" <<CONF
worker_processes 1;
pid $work/fixed.pid;
error_log $work/fixed.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen $fixed; location / { default_type application/json; return 200 '$answer'; } }
  server {
    listen $grpcb http2;
    location / { default_type application/grpc; add_trailer grpc-status 0; return 200 '$answer'; }
  }
}
CONF
nginx -c "$work/fixed.conf" -g 'daemon off;' &

# Meridian: model bench on the sim backend, model fixed on the fixed one.
cat > "$work/meridian.yaml" <<YAML
regions:
  - name: r
    zones: [r-a]
    gateway:
      listeners:
        - { name: public, address: 127.50.0.1:8080, protocols: [http1] }
        - { name: h2c, address: 127.50.0.1:8082, protocols: [h2c] }
        - name: tls
          address: 127.50.0.1:8443
          protocols: [http1]
          tls: { min_version: "1.3", certificates: [{ server_names: [bench.local], cert: $work/cert.pem, key: $work/key.pem }] }
      admin: { address: 127.50.0.1:9901 }
observability: { access_log: { enabled: false } }
models:
  - name: bench
    versions: [{ name: v1, endpoints: [{ address: $sim, region: r, zone: r-a }] }]
  - name: fixed
    versions: [{ name: v1, endpoints: [{ address: $fixed, region: r, zone: r-a }] }]
  - name: grpc
    versions: [{ name: v1, endpoints: [{ address: $grpcb, region: r, zone: r-a }] }]
YAML
MERIDIAN_LOG=warn $bin gateway --config "$work/meridian.yaml" --threads 1 > "$work/gw.log" 2>&1 &
meridian_pid=$!

cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream sim { server $sim; keepalive 128; }
  upstream fixed { server $fixed; keepalive 128; }
  upstream grpcb { server $grpcb; keepalive 128; }
  server {
    listen 127.50.0.2:8080;
    listen 127.50.0.2:8082 http2;
    listen 127.50.0.2:8443 ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.3;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    # The forwarding fields Meridian adds to every request (the sim backend echoes them back).
    proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto \$scheme;
    proxy_set_header Forwarded "for=\$remote_addr;proto=\$scheme";
    location /v2/models/bench/ { proxy_pass http://sim; }
    location /v2/models/fixed/ { proxy_pass http://fixed; }
    location /inference.GRPCInferenceService/ { grpc_pass grpc://grpcb; }
  }
}
CONF
nginx -c "$work/nginx.conf" -g 'daemon off;' &

cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
  # The forwarding fields Meridian adds to every request (the sim backend echoes them back).
  option forwardfor
frontend fe
  bind 127.50.0.3:8080
  bind 127.50.0.3:8082 proto h2
  bind 127.50.0.3:8443 ssl crt $work/both.pem ssl-min-ver TLSv1.3
  http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]
  http-request set-header Forwarded for=%[src];proto=%[ssl_fc,iif(https,http)]
  use_backend fixed if { path_beg /v2/models/fixed/ }
  use_backend grpc if { path_beg /inference.GRPCInferenceService/ }
  default_backend sim
backend sim
  server s1 $sim
backend fixed
  server f1 $fixed
backend grpc
  server g1 $grpcb proto h2
CONF
haproxy -f "$work/haproxy.cfg" &
haproxy_pid=$!

cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$body'
LUA
printf '%s' "$body" > "$work/body.json"
# A gRPC message of the same 96 bytes: the 5-byte prefix (uncompressed, length 91), then 91 bytes.
printf '\x00\x00\x00\x00\x5b%s' "$(printf 'a%.0s' $(seq 1 91))" > "$work/grpc.bin"

# Each proxy: HTTP/1.1 on :8080, h2c (prior knowledge) on :8082, TLS 1.3 on :8443.
declare -A h1=([meridian]=http://127.50.0.1:8080 [nginx]=http://127.50.0.2:8080 [haproxy]=http://127.50.0.3:8080)
declare -A h2=([meridian]=http://127.50.0.1:8082 [nginx]=http://127.50.0.2:8082 [haproxy]=http://127.50.0.3:8082)
declare -A tls=([meridian]=https://127.50.0.1:8443 [nginx]=https://127.50.0.2:8443 [haproxy]=https://127.50.0.3:8443)
for t in meridian nginx haproxy; do
  for _ in $(seq 1 100); do curl -sf -o /dev/null -X POST "${h1[$t]}/v2/models/bench/infer" -d '{}' && break; sleep 0.1; done
done
nginx_pid=$(pgrep -P "$(cat "$work/nginx.pid")" | head -1)
declare -A pid=([meridian]=$meridian_pid [nginx]=$nginx_pid [haproxy]=$haproxy_pid)
path_of() { echo "/v2/models/$1/infer"; }

# CPU seconds a process has used, user and system, from /proc (no tracing overhead on the run).
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{print $14 / hz, $15 / hz}' "/proc/$1/stat"; }

declare -A rps cpu user sys pair
closed() { # target backend url -> one wrk run; the proxy's CPU over the same window
  local t=$1 b=$2 url=$3 out before after
  before=$(cpu_of "${pid[$t]}")
  out=$(wrk -t1 -c"$conns" -d"${secs}s" -s "$work/post.lua" "$url$(path_of "$b")")
  after=$(cpu_of "${pid[$t]}")
  local n r per us
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  r=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  read -r per us < <(awk -v a="$before" -v b="$after" -v n="$n" 'BEGIN {split(a, x, " "); split(b, y, " ");
    printf "%.1f %.1f\n", (y[1] + y[2] - x[1] - x[2]) * 1e6 / n, (y[1] - x[1]) * 1e6 / n}')
  if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then echo "  $t/$b: $(grep 'Non-2xx\|Socket errors' <<<"$out")" >&2; fi
  rps[$t/$b]+="$r "
  cpu[$t/$b]+="$per "
  user[$t/$b]+="$us "
  echo "  round $round $t/$b: $r req/s, $per us CPU/req ($us user)" >&2
}
syscalls() { # target backend url -> syscalls per request under a short wrk run with perf counting
  local t=$1 b=$2 url=$3 out n calls
  perf stat -x, -e raw_syscalls:sys_enter -p "${pid[$t]}" -o "$work/perf" -- sleep 3 &
  local perf_pid=$!
  out=$(wrk -t1 -c"$conns" -d3s -s "$work/post.lua" "$url$(path_of "$b")")
  wait $perf_pid || true
  n=$(awk '/requests in/ {print $1}' <<<"$out")
  calls=$(awk -F, '/raw_syscalls/ {print $1}' "$work/perf")
  sys[$t/$b]=$(awk -v c="$calls" -v n="$n" 'BEGIN {printf "%.2f", c/n}')
  echo "  $t/$b: ${sys[$t/$b]} syscalls/req" >&2
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }

[ -n "$open_rate" ] || for b in bench fixed; do
  for t in meridian nginx haproxy; do syscalls $t $b "${h1[$t]}"; done
done

declare -A p50 p99 p999 olcpu p99pair
rate=$open_rate
for round in $(seq 1 "$rounds"); do
  [ -n "$open_rate" ] || for b in bench fixed; do
    for t in meridian nginx haproxy; do closed $t $b "${h1[$t]}"; done
    # This round's ratios: Meridian against each peer measured seconds apart (a pair drifts less
    # than the machine does between rounds).
    for t in nginx haproxy; do
      pair[$t/$b]+="$(ratio "$(echo "${rps[meridian/$b]}" | awk '{print $NF}')" "$(echo "${rps[$t/$b]}" | awk '{print $NF}')") "
    done
  done
  # The fixed offered rate: half of NGINX's closed-loop rate on the sim backend in round 1.
  [ -n "$rate" ] || rate=$(awk -v r="$(echo "${rps[nginx/bench]}" | median)" 'BEGIN {printf "%d", r/2}')
  for b in bench fixed; do
    for t in meridian nginx haproxy; do
      before=$(cpu_of "${pid[$t]}")
      line=$("$openloop" --url "${h1[$t]}$(path_of $b)" --rate "$rate" --seconds "$secs" --connections 64 --body "$body")
      after=$(cpu_of "${pid[$t]}")
      echo "  round $round open loop $t/$b at $rate/s: $line" >&2
      field() { awk -v f="$1" '{for (i=1;i<NF;i++) if ($i==f) print $(i+1)}' <<<"$line"; }
      p50[$t/$b]+="$(field p50) "
      p99[$t/$b]+="$(field p99) "
      p999[$t/$b]+="$(field p999) "
      olcpu[$t/$b]+="$(awk -v a="$before" -v b="$after" -v n="$(field ok)" 'BEGIN {split(a, x, " "); split(b, y, " ");
        printf "%.1f", (y[1] + y[2] - x[1] - x[2]) * 1e6 / n}') "
    done
    # This round's p99 ratios: Meridian's over each peer's, measured seconds apart.
    for t in nginx haproxy; do
      p99pair[$t/$b]+="$(ratio "$(echo "${p99[meridian/$b]}" | awk '{print $NF}')" "$(echo "${p99[$t/$b]}" | awk '{print $NF}')") "
    done
  done
done

declare -A h2rps tlsrps grpcrps grpccpu
grpc_call=/inference.GRPCInferenceService/ModelInfer
[ -n "$open_rate" ] || for round in $(seq 1 "$rounds"); do
  for t in meridian nginx haproxy; do
    n=$((secs * 20000))
    out=$(h2load -n "$n" -c "$conns" -m 8 -d "$work/body.json" -H 'content-type: application/json' "${h2[$t]}$(path_of fixed)" 2>&1)
    r=$(awk '/^finished in/ {gsub(",", ""); print $4}' <<<"$out")
    grep -q '^status codes: [0-9]* 2xx' <<<"$out" || true
    h2rps[$t]+="$r "
    echo "  round $round h2c $t: $r req/s ($(grep '^requests:' <<<"$out"))" >&2
    out=$(wrk -t1 -c"$conns" -d"${secs}s" -s "$work/post.lua" "${tls[$t]}$(path_of fixed)")
    r=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    tlsrps[$t]+="$r "
    echo "  round $round tls1.3 $t: $r req/s" >&2
    before=$(cpu_of "${pid[$t]}")
    out=$(h2load -n "$n" -c "$conns" -m 8 -d "$work/grpc.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
      -H 'x-model-name: grpc' "${h2[$t]}$grpc_call" 2>&1)
    after=$(cpu_of "${pid[$t]}")
    r=$(awk '/^finished in/ {gsub(",", ""); print $4}' <<<"$out")
    grep -q "^status codes: $n 2xx" <<<"$out" || echo "  grpc $t: $(grep '^status codes' <<<"$out")" >&2
    grpcrps[$t]+="$r "
    grpccpu[$t]+="$(awk -v a="$before" -v b="$after" -v n="$n" 'BEGIN {split(a, x, " "); split(b, y, " ");
      printf "%.1f", (y[1] + y[2] - x[1] - x[2]) * 1e6 / n}') "
    echo "  round $round grpc $t: $r req/s ($(grep '^requests:' <<<"$out"))" >&2
  done
done

if [ -z "$open_rate" ]; then
echo
echo "Closed loop (wrk, $conns connections, ${secs}s, median of $rounds); the proxy process's own CPU per request (/proc: user + system, and user alone) over the same runs, and its syscalls per request (perf, a separate 3 s run). The last two columns: Meridian's req/s over the proxy's as the ratio of the medians, and the median of each round's ratio (with the range):"
echo
echo "| backend | proxy | req/s | CPU us/req | user us/req | syscalls/req | ratio of medians | median of round ratios (min-max) |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for b in bench fixed; do
  m=$(echo "${rps[meridian/$b]}" | median)
  for t in meridian nginx haproxy; do
    r=$(echo "${rps[$t/$b]}" | median)
    rounds_ratio=""
    if [ -n "${pair[$t/$b]:-}" ]; then
      sorted=$(tr ' ' '\n' <<<"${pair[$t/$b]}" | grep -v '^$' | sort -g)
      rounds_ratio="$(echo "${pair[$t/$b]}" | median) ($(head -1 <<<"$sorted")-$(tail -1 <<<"$sorted"))"
    fi
    echo "| $b | $t | $r | $(echo "${cpu[$t/$b]}" | median) | $(echo "${user[$t/$b]}" | median) | ${sys[$t/$b]} | $(ratio "$m" "$r") | $rounds_ratio |"
  done
done
fi
echo
echo "Open loop at $rate req/s ($([ -n "$open_rate" ] && echo "OPEN_RATE" || echo "half of NGINX's closed-loop rate")), 64 connections, latency in ms (median of $rounds), the proxy's CPU per request over the same runs, and Meridian's p99 over the proxy's as the median of each round's ratio (with the range):"
echo
echo "| backend | proxy | p50 | p99 | p99.9 | CPU us/req | p99 ratio: median of rounds (min-max) |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for b in bench fixed; do
  for t in meridian nginx haproxy; do
    rounds_ratio=""
    if [ -n "${p99pair[$t/$b]:-}" ]; then
      sorted=$(tr ' ' '\n' <<<"${p99pair[$t/$b]}" | grep -v '^$' | sort -g)
      rounds_ratio="$(echo "${p99pair[$t/$b]}" | median) ($(head -1 <<<"$sorted")-$(tail -1 <<<"$sorted"))"
    fi
    echo "| $b | $t | $(echo "${p50[$t/$b]}" | median) | $(echo "${p99[$t/$b]}" | median) | $(echo "${p999[$t/$b]}" | median) | $(echo "${olcpu[$t/$b]}" | median) | $rounds_ratio |"
  done
done
[ -n "$open_rate" ] && exit 0
echo
echo "Other protocols (median of $rounds): h2c is h2load -c $conns -m 8 to the fixed backend; TLS 1.3 is wrk -c $conns over HTTP/1.1 to the fixed backend; gRPC is h2load -c $conns -m 8 of a 96-byte unary call to an h2c backend, with the proxy's CPU per request."
echo
echo "| proxy | h2c req/s | TLS 1.3 req/s | gRPC req/s | gRPC CPU us/req |"
echo "| --- | --- | --- | --- | --- |"
for t in meridian nginx haproxy; do
  echo "| $t | $(echo "${h2rps[$t]}" | median) | $(echo "${tlsrps[$t]}" | median) | $(echo "${grpcrps[$t]}" | median) | $(echo "${grpccpu[$t]}" | median) |"
done
