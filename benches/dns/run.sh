#!/usr/bin/env bash
# DNS queries per second side by side: meridian dns vs NSD vs Knot serving the same zone, one worker
# each, the same dnsperf query mix, in one run (rounds interleaved). Prints a markdown table for
# benches/README.md. Meridian answers api.meridian.test by GSLB policy; NSD and Knot serve it as a
# static A record (they have no GSLB), so Meridian does strictly more work per query.
#
#   benches/dns/run.sh [seconds-per-run] [rounds] [clients]
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-10}; rounds=${2:-3}; clients=${3:-4}
for t in dnsperf nsd knotd; do command -v $t >/dev/null || { echo "missing $t (apt-get install dnsperf nsd knot)" >&2; exit 1; }; done
cargo build --release --quiet --bin meridian
bin=$PWD/target/release/meridian
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT

cat > "$work/meridian.test.zone" <<'ZONE'
$ORIGIN meridian.test.
$TTL 300
@    IN SOA ns1.meridian.test. hostmaster.meridian.test. 1 3600 600 604800 60
@    IN NS  ns1.meridian.test.
ns1  IN A   127.0.0.1
www  IN CNAME api.meridian.test.
api  30 IN A 127.80.1.1
ZONE

cat > "$work/meridian.yaml" <<YAML
regions:
  - name: us
    zones: [us-a]
    gateway:
      listeners: [{ name: p, address: 127.80.1.1:8080 }]
      admin: { address: 127.80.1.1:9901 }
      public_addresses: [127.80.1.1]
dns:
  listen: [127.80.0.1:5353]
  admin: { address: 127.80.0.1:9953 }
  rrl: { enabled: false }   # like NSD's rrl-ratelimit: 0 below: raw answering speed is measured
  zones:
    - name: meridian.test
      soa: { mname: ns1.meridian.test, rname: hostmaster.meridian.test, minimum: 60s }
      ns: [ns1.meridian.test]
      records:
        - { name: ns1, type: A, value: 127.0.0.1 }
        - { name: www, type: CNAME, value: api.meridian.test }
  gslb:
    - { name: api.meridian.test, policy: failover, regions: [us] }
YAML
MERIDIAN_LOG=warn $bin dns --config "$work/meridian.yaml" --threads 1 > "$work/meridian.log" 2>&1 &

cat > "$work/nsd.conf" <<CONF
server:
  ip-address: 127.80.0.2@5353
  server-count: 1
  username: ""
  zonesdir: "$work"
  pidfile: "$work/nsd.pid"
  database: ""
  xfrdfile: "$work/xfrd.state"
  zonelistfile: "$work/zone.list"
  verbosity: 0
  # Debian builds NSD with response-rate limiting (200 q/s per /24) on by default; a benchmark from
  # one address must turn it off, or NSD answers only a trickle.
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: meridian.test
  zonefile: meridian.test.zone
CONF
nsd -d -c "$work/nsd.conf" > "$work/nsd.log" 2>&1 &

mkdir -p "$work/knotdb"
cat > "$work/knot.conf" <<CONF
server:
    listen: 127.80.0.3@5353
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    rundir: "$work"
database:
    storage: "$work/knotdb"
zone:
  - domain: meridian.test
    storage: "$work"
    file: meridian.test.zone
CONF
knotd -c "$work/knot.conf" > "$work/knot.log" 2>&1 &

# The query mix: mostly the public name, some static, some NXDOMAIN.
: > "$work/queries"
for _ in $(seq 1 6); do echo "api.meridian.test A" >> "$work/queries"; done
echo "ns1.meridian.test A" >> "$work/queries"
echo "www.meridian.test A" >> "$work/queries"
echo "nope.meridian.test A" >> "$work/queries"
echo "meridian.test SOA" >> "$work/queries"

for a in 127.80.0.1 127.80.0.2 127.80.0.3; do
  for _ in $(seq 1 100); do dig @$a -p 5353 +time=1 +tries=1 ns1.meridian.test A 2>/dev/null | grep -q 127.0.0.1 && break; sleep 0.1; done
done

declare -A qps
for round in $(seq 1 "$rounds"); do
  for t in meridian:127.80.0.1 nsd:127.80.0.2 knot:127.80.0.3; do
    name=${t%%:*}; addr=${t#*:}
    q=$(dnsperf -s "$addr" -p 5353 -d "$work/queries" -l "$secs" -c "$clients" -q 200 2>/dev/null | awk '/Queries per second/ {print $4}')
    qps[$name]+="$q "
    echo "  round $round $name: $q q/s" >&2
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m=$(echo "${qps[meridian]}" | median)
echo
echo "| server | q/s (median of $rounds) | meridian / server |"
echo "| --- | --- | --- |"
for t in meridian nsd knot; do
  v=$(echo "${qps[$t]}" | median)
  echo "| $t | $v | $(awk -v a="$m" -v b="$v" 'BEGIN {printf "%.2f", a/b}') |"
done
