#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: the one CPU figure this shared, noisy
# machine cannot disturb (req/s and CPU time move by +-20% between runs here; this moves by a few
# instructions). Each proxy (one worker) runs under callgrind in front of the same NGINX
# `return 200` backend; after a warm-up its counters are zeroed, then exactly N keep-alive POSTs
# go through it, and its user-space instructions are divided by N. Three times: HTTP/1.1 clients
# (h2load --h1, 8 connections), then HTTP/2 cleartext clients (h2c, 8 connections of 8 streams),
# both to an HTTP/1.1 backend; then gRPC calls (h2c, 8 x 8, a 96-byte unary ModelInfer routed by
# `x-model-name`) to an NGINX h2c backend that answers with a `grpc-status` trailer.
#
#   benches/load/instructions.sh [requests] [meridian binary...]
#
# CALLGRIND_KEEP=dir keeps each dump there (read them with
# `callgrind_annotate --inclusive=no --threshold=100 FILE`).
#
# With several binaries (e.g. an earlier commit's build) each is counted in the same way, for
# A/Bs of a change. Needs: nginx haproxy valgrind nghttp2-client (h2load).
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-5000}; shift || true
bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
  cargo build --release --quiet --bin meridian
  bins=(target/release/meridian)
fi
for t in nginx haproxy valgrind callgrind_control h2load; do
  command -v $t >/dev/null || { echo "missing $t (apt-get install nginx haproxy valgrind nghttp2-client)" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rc=$?; kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; exit $rc' EXIT

backend=127.51.1.1:8000
grpcb=127.51.1.2:8000
body='{"id":"1","inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
answer='{"model_name":"fixed","model_version":"v1","outputs":[{"name":"output-0","shape":[1],"datatype":"FP32","data":[1.0]}]}'
printf '%s' "$body" > "$work/body.json"
# A gRPC message of the same 96 bytes: the 5-byte prefix (uncompressed, length 91), then 91 bytes.
printf '\x00\x00\x00\x00\x5b%s' "$(printf 'a%.0s' $(seq 1 91))" > "$work/grpc.bin"
grpc_call=/inference.GRPCInferenceService/ModelInfer
cat > "$work/backend.conf" <<CONF
worker_processes 1; pid $work/backend.pid; error_log $work/backend.err warn;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  server { listen $backend; location / { default_type application/json; return 200 '$answer'; } }
  server { listen $grpcb http2;
    location / { default_type application/grpc; add_trailer grpc-status 0; return 200 '$answer'; } } }
CONF
nginx -c "$work/backend.conf" -g 'daemon off;' &

# Sends N requests to URL (plus a warm-up of 500) with h2load's FLAGS (the client protocol),
# zeroing PID's counters in between, and prints instructions per request from the dump.
count() {
  local name=$1 url=$2 pid=$3 out=$4 flags=$5
  for _ in $(seq 100); do curl -s -o /dev/null -X POST --data-binary @"$work/body.json" "$url" && break; sleep 0.2; done
  local data="$work/body.json"
  case "$flags" in *grpc*) data="$work/grpc.bin" ;; esac
  h2load $flags -n 500 -c 8 -d "$data" "$url" > /dev/null
  callgrind_control -z "$pid" > /dev/null 2>&1
  h2load $flags -n "$n" -c 8 -d "$data" "$url" | grep -E "^requests:|^status codes" | tr '\n' ' ' | sed "s|^|  $name: |"
  echo
  callgrind_control -d "$pid" > /dev/null 2>&1
  sleep 1
  local ir
  ir=$(grep -h "^summary:" "$out".* 2>/dev/null | tail -1 | awk '{print $2}')
  printf '%-48s %8.0f instructions/request\n' "$name" "$(echo "$ir / $n" | bc -l)"
  # CALLGRIND_KEEP=dir keeps the dumps, for callgrind_annotate.
  if [ -n "${CALLGRIND_KEEP:-}" ]; then cp "$out".* "$CALLGRIND_KEEP"/; fi
  rm -f "$out".*
}

# The three runs through one proxy: HTTP/1.1 to H1, h2c to H2C, and gRPC on H2C's listener.
both() {
  local name=$1 h1=$2 h2c=$3 pid=$4 out=$5
  count "$name, HTTP/1.1" "$h1" "$pid" "$out" --h1
  count "$name, h2c" "$h2c" "$pid" "$out" "-m 8"
  count "$name, gRPC" "${h2c%%/v2/*}$grpc_call" "$pid" "$out" \
    "-m 8 -H content-type:application/grpc -H te:trailers -H x-model-name:grpc"
}

i=0
for bin in "${bins[@]}"; do
  i=$((i + 1))
  cat > "$work/meridian.yaml" <<YAML
regions:
  - name: r
    zones: [r-a]
    gateway:
      listeners:
        - { name: public, address: 127.51.0.1:808$i, protocols: [http1] }
        - { name: h2c, address: 127.51.0.1:818$i, protocols: [h2c] }
      admin: { address: 127.51.0.1:990$i }
observability: { access_log: { enabled: false } }
models:
  - name: fixed
    versions: [{ name: v1, endpoints: [{ address: $backend, region: r, zone: r-a }] }]
  - name: grpc
    versions: [{ name: v1, endpoints: [{ address: $grpcb, region: r, zone: r-a }] }]
YAML
  MERIDIAN_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$work/meridian$i.out" \
    "$bin" gateway --config "$work/meridian.yaml" --threads 1 > "$work/gw$i.log" 2>&1 &
  pid=$!
  both "meridian ($bin)" "http://127.51.0.1:808$i/v2/models/fixed/infer" \
    "http://127.51.0.1:818$i/v2/models/fixed/infer" $pid "$work/meridian$i.out"
  kill $pid; wait $pid 2>/dev/null || true
done

cat > "$work/nginx.conf" <<CONF
worker_processes 1; master_process off; daemon off; pid $work/nginx.pid; error_log $work/nginx.err warn;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000;
  upstream fixed { server $backend; keepalive 64; }
  upstream grpcb { server $grpcb; keepalive 64; }
  server { listen 127.51.0.2:8080; listen 127.51.0.2:8082 http2; proxy_http_version 1.1; proxy_set_header Connection "";
           location / { proxy_pass http://fixed; }
           location $grpc_call { grpc_pass grpc://grpcb; } } }
CONF
valgrind --tool=callgrind --callgrind-out-file="$work/nginx.out" nginx -c "$work/nginx.conf" > "$work/nginx.log" 2>&1 &
pid=$!
both "nginx $(nginx -v 2>&1 | sed 's/.*\///')" http://127.51.0.2:8080/v2/models/fixed/infer \
  http://127.51.0.2:8082/v2/models/fixed/infer $pid "$work/nginx.out"
kill $pid; wait $pid 2>/dev/null || true

cat > "$work/haproxy.cfg" <<CONF
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind 127.51.0.3:8080
  bind 127.51.0.3:8082 proto h2
  use_backend grpc if { path_beg /inference.GRPCInferenceService/ }
  default_backend fixed
backend fixed
  server f1 $backend
backend grpc
  server g1 $grpcb proto h2
CONF
valgrind --tool=callgrind --callgrind-out-file="$work/haproxy.out" haproxy -f "$work/haproxy.cfg" > "$work/haproxy.log" 2>&1 &
pid=$!
both "haproxy $(haproxy -v | head -1 | awk '{print $3}')" http://127.51.0.3:8080/v2/models/fixed/infer \
  http://127.51.0.3:8082/v2/models/fixed/infer $pid "$work/haproxy.out"
