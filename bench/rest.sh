#!/usr/bin/env bash
# Verification requests per second over HTTP: shaken's ATIS-1000082 POST /stir/v1/verification
# against `secsipidx -H` POST /v1/check, on this machine, with the same identities, in one run.
#
#   bench/rest.sh        # ~80 s; last line: verify_ratio_vs_secsipidx=N.NN
#
# The peer harness (../shared/bench-peers, or $PEERS) makes the PKI and the signed identities
# and drives both servers with the same wrk script (wrk-post-identities.lua: the raw Identity
# value for secsipidx, an ATIS verificationRequest for shaken), wrk -t1 -c32 as in
# peer_baselines.sh. secsipidx verifies with the bare public key (-p pub.pem, no chain work per
# request); shaken gets a warm certificate cache (the chain imported once per worker, validated
# on first use), which is the same comparison. Both accept iat up to an hour old
# (secsipidx -expire 3600, shaken max_iat_age = 3600), so one set of identities serves every
# round. Rounds alternate secsipidx and shaken so drift hits both; the ratio is of the medians.
#
# Environment:
#   WORKERS      shaken worker processes sharing the port (SO_REUSEPORT); default: nproc
#   PIN          1 (default): worker i runs on CPU i (wrk and secsipidx are not pinned); 0: not
#   CALL_LOG     1 (default): shaken records every decision in a SQLite call log, as a
#                deployment does (secsipidx writes a line per request to its log); 0: none
#   ROUNDS       measured rounds per server (default 3); DURATION per round (default 10s)
#   CONNECTIONS  wrk connections (default 32); PEERS, PYTHON: harness dir, interpreter
#   PROFILE      1: then break one request's cost down (bench/rest_profile.py, ~40 s more)
#   LATENCY      1 (default, when `hey` is installed): then p50/p99 of each server at 80 % of
#                its median rate, LATENCY_SECONDS (default 10) each, with hey -c 32 holding the
#                rate (hey repeats one request body: one identity, checked as above)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
peers=${PEERS:-$root/../shared/bench-peers}
py=${PYTHON:-$root/.venv/bin/python}
workers=${WORKERS:-$(nproc)}
rounds=${ROUNDS:-3}
duration=${DURATION:-10s}
conns=${CONNECTIONS:-32}
call_log=${CALL_LOG:-1}
pin=${PIN:-1}
for tool in wrk secsipidx curl; do
  command -v "$tool" >/dev/null || { echo "rest.sh: $tool is not installed (apt-get install $tool)" >&2; exit 2; }
done
[ -f "$peers/wrk-post-identities.lua" ] || { echo "rest.sh: no peer harness in $peers (set PEERS)" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The harness's PKI and identities (orig;dest;token;date;x5u), as peer_baselines.sh makes them.
X5U=https://certs.example.org/sp-chain.pem
"$py" "$peers/make_pki.py" "$work" >/dev/null
"$py" "$peers/gen_identities.py" "$work/sp.key" "$X5U" 20000 "$work/ids.csv"
awk -F';' 'NR>1{print $3";info=<"$5">;alg=ES256;ppt=shaken"}' "$work/ids.csv" > "$work/ids.raw"
awk -F';' 'NR>1{print $1"|"$2"|"$3";info=<"$5">;alg=ES256;ppt=shaken"}' "$work/ids.csv" > "$work/ids.atis"

port=$(free_port)
sport=$(free_port)
cat > "$work/shaken.toml" <<EOF
[verification]
trust_anchors = ["ca.pem"]
max_iat_age = 3600
cache_dir = "cache"

[server]
rest = ["http:127.0.0.1:$port"]
verification_open = true
api_schema = "atis"
EOF

args=(--config "$work/shaken.toml" --warm "$X5U=$work/sp-chain.pem" --workers "$workers")
[ "$call_log" = 1 ] && args+=(--call-log "$work/calls.db")
[ "$pin" = 1 ] && args+=(--pin)
"$py" "$here/rest_server.py" "${args[@]}" > "$work/shaken.log" 2>&1 &
pids+=($!)
secsipidx -H "127.0.0.1:$sport" -p "$work/pub.pem" -expire 3600 > "$work/secsipidx.log" 2>&1 &
pids+=($!)

ours=http://127.0.0.1:$port/stir/v1/verification
theirs=http://127.0.0.1:$sport/v1/check
for _ in $(seq 100); do
  if curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && curl -s -o /dev/null -X POST "$theirs"; then
    break
  fi
  sleep 0.1
done

# Both must accept every identity, or the benchmark measures a failing path.
"$py" - "$port" "$sport" "$work/ids.atis" <<'EOF'
import http.client, json, sys, time
port, sport, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
lines = open(path).read().splitlines()[:200]
ours, theirs = http.client.HTTPConnection("127.0.0.1", port), http.client.HTTPConnection("127.0.0.1", sport)
for line in lines:
    orig, dest, identity = line.split("|", 2)
    body = {"verificationRequest": {"from": {"tn": orig}, "to": {"tn": [dest]},
                                     "time": int(time.time()), "identity": identity}}
    ours.request("POST", "/stir/v1/verification", json.dumps(body), {"Content-Type": "application/json"})
    answer = ours.getresponse().read()
    assert json.loads(answer) == {"verificationResponse": {"verstat": "TN-Validation-Passed"}}, answer
    theirs.request("POST", "/v1/check", identity)
    answer = theirs.getresponse().read()
    assert answer.strip() == b"OK", answer
print(f"checked: {len(lines)} identities pass on both servers", file=sys.stderr)
EOF

measure() { # URL IDENTITIES FORMAT DURATION -> requests/s (integer); non-2xx answers fail the run
  local out
  out=$(IDENTITIES="$2" BODY_FORMAT="$3" wrk -t1 -c"$conns" -d"$4" -s "$peers/wrk-post-identities.lua" "$1")
  echo "$out" >> "$work/wrk.log"
  if echo "$out" | grep -q -E "Non-2xx|Socket errors"; then
    echo "rest.sh: errors during the run against $1:" >&2
    echo "$out" >&2
    exit 1
  fi
  echo "$out" | awk '/Requests\/sec/{print int($2)}'
}

measure "$theirs" "$work/ids.raw" raw 2s >/dev/null
measure "$ours" "$work/ids.atis" atis 2s >/dev/null
s_all=() o_all=()
for r in $(seq "$rounds"); do
  s=$(measure "$theirs" "$work/ids.raw" raw "$duration")
  o=$(measure "$ours" "$work/ids.atis" atis "$duration")
  s_all+=("$s")
  o_all+=("$o")
  echo "round $r: secsipidx=$s shaken=$o ratio=$(awk -v a="$o" -v b="$s" 'BEGIN{printf "%.2f", a/b}')" >&2
done
median() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END{print (NR%2) ? v[(NR+1)/2] : int((v[NR/2]+v[NR/2+1])/2)}'; }
if [ "$call_log" = 1 ]; then  # every verification answered under wrk must be in the call log
  sleep 0.5
  "$py" - "$work/calls.db" "$work/wrk.log" >&2 <<'PY'
import re, sqlite3, sys
rows = sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM calls").fetchone()[0]
runs = open(sys.argv[2]).read().split("Running ")
sent = sum(int(n) for run in runs if "/stir/v1/" in run for n in re.findall(r"(\d+) requests in", run))
print(f"call log: {rows} rows for {sent} shaken requests answered under wrk")
assert rows >= sent, "decisions missing from the call log"
PY
fi
sm=$(median "${s_all[@]}")
om=$(median "${o_all[@]}")
echo "workers=$workers pin=$pin call_log=$call_log connections=$conns duration=$duration rounds=$rounds" >&2
echo "secsipidx_http_verify_rps=$sm"
echo "shaken_rest_verify_rps=$om"
echo "verify_ratio_vs_secsipidx=$(awk -v a="$om" -v b="$sm" 'BEGIN{printf "%.2f", a/b}')"
# Latency at 80 % of each server's own median rate: hey holds the offered rate (-q per
# connection), so the percentiles are those of a loaded server that keeps up, not of a queue.
if [ "${LATENCY:-1}" = 1 ] && command -v hey >/dev/null; then
  lat_seconds=${LATENCY_SECONDS:-10}
  "$py" - "$work/ids.atis" "$work" <<'PY'
import json, sys, time
orig, dest, identity = open(sys.argv[1]).readline().rstrip("\n").split("|", 2)
body = {"verificationRequest": {"from": {"tn": orig}, "to": {"tn": [dest]},
                                 "time": int(time.time()), "identity": identity}}
open(f"{sys.argv[2]}/one.atis", "w").write(json.dumps(body))
open(f"{sys.argv[2]}/one.raw", "w").write(identity)
PY
  latency() { # URL BODY RATE -> "p50_ms p99_ms"; any non-200 answer fails the run
    local per out
    per=$(( ($3 + conns - 1) / conns ))
    out=$(hey -z "${lat_seconds}s" -c "$conns" -q "$per" -m POST -T application/json -D "$2" "$1")
    echo "$out" >> "$work/hey.log"
    if echo "$out" | grep -A5 "Status code distribution" | grep -v "\[200\]" | grep -q "\["; then
      echo "rest.sh: non-200 answers at a fixed rate against $1" >&2
      echo "$out" >&2
      exit 1
    fi
    echo "$out" | awk '/ 50% in/{p50=$3*1000} / 99% in/{p99=$3*1000} END{printf "%.2f %.2f", p50, p99}'
  }
  s_rate=$(( sm * 8 / 10 )); o_rate=$(( om * 8 / 10 ))
  read -r s50 s99 <<< "$(latency "$theirs" "$work/one.raw" "$s_rate")"
  read -r o50 o99 <<< "$(latency "$ours" "$work/one.atis" "$o_rate")"
  echo "secsipidx_latency_at_80pct: rate=$s_rate/s p50=${s50}ms p99=${s99}ms"
  echo "shaken_latency_at_80pct: rate=$o_rate/s p50=${o50}ms p99=${o99}ms"
fi
if [ "${PROFILE:-0}" = 1 ]; then
  "$py" "$here/rest_profile.py" "$work" "$peers"
fi
