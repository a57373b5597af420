#!/usr/bin/env bash
# The SIP redirect server against Kamailio + secsipid, same machine, same run, same load.
#
#   bench/sip.sh [WORKDIR]
#
# 1. ../shared/bench-peers/peer_baselines.sh measures Kamailio 5.6 + secsipid (2 children)
#    verifying and signing with sipp, and leaves its PKI in WORKDIR/peers (ca.pem, sp.key,
#    sp-chain.pem, ...).
# 2. `shaken serve` (2 workers, the same count as Kamailio's children) is started on the same
#    PKI: it signs with sp.key for the same x5u, and verifies with ca.pem as its trust anchor
#    and sp-chain.pem in its certificate cache (imported with `shaken cache import`: a warm
#    cache, as the peers' README asks, since Kamailio verifies with the bare public key).
# 3. The same sipp scenarios (uac-sign.xml, uac-verify.xml) run through the peers' own
#    sipp_run.sh over the same rate ladder, with identities freshly made by the peers'
#    gen_identities.py for each rate (5 seconds of calls per rate). A rate is clean when every
#    call got its 302 and no INVITE was retransmitted; the ladder stops at the first rate that
#    is not.
#
# Prints the peers' lines, then shaken_sign_cps=, shaken_verify_cps=, and
#   sign_ratio_vs_kamailio=N.NN
#   verify_ratio_vs_kamailio=N.NN
# Rates tried: RATES (default below), used for the peers and for shaken alike. PEERS overrides
# the location of the peer scripts. Needs sipp, kamailio (+ secsipid module), secsipidx, wrk:
# peer_baselines.sh installs the missing ones with apt-get (root).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
peers=${PEERS:-$(cd "$repo/../shared/bench-peers" 2>/dev/null && pwd || true)}
if [ -z "$peers" ] || [ ! -f "$peers/peer_baselines.sh" ]; then
  echo "bench/sip.sh: the peer scripts are not at ../shared/bench-peers (set PEERS=DIR)" >&2
  exit 2
fi
shaken=${SHAKEN:-$repo/.venv/bin/shaken}
work=${1:-$(mktemp -d)}
mkdir -p "$work"
work=$(cd "$work" && pwd)
export RATES=${RATES:-"1000 2000 3000 4000 5000 6000 7000 8000 9000 10000 12000 14000"}
X5U=${X5U:-https://certs.example.org/sp-chain.pem}
export X5U
SIGN_PORT=${SIGN_PORT:-5090}
VERIFY_PORT=${VERIFY_PORT:-5092}
WORKERS=${WORKERS:-2}

# 1. The peers, measured now.
bash "$peers/peer_baselines.sh" "$work/peers" | tee "$work/peers.txt"
kam_verify=$(sed -n 's/^kamailio_secsipid_verify_cps=//p' "$work/peers.txt")
kam_sign=$(sed -n 's/^kamailio_secsipid_sign_cps=//p' "$work/peers.txt")

# 2. shaken on the same PKI.
pki=$work/peers
chmod 600 "$pki/sp.key"
mkdir -p "$work/cache"
"$shaken" cache import "$pki/sp-chain.pem" --url "$X5U" --cache-dir "$work/cache" >/dev/null
cat > "$work/shaken.toml" <<EOF
# bench/sip.sh: shaken on the peers' PKI (made by make_pki.py).
[attestation]
private_key = "$pki/sp.key"
x5u = "$X5U"
unknown_tn_attest = "A"  # every caller signed at A, as Kamailio's secsipid_build_identity does

[verification]
trust_anchors = ["$pki/ca.pem"]
cache_dir = "$work/cache"

[server]
sip_sign = ["udp:127.0.0.1:$SIGN_PORT"]
sip_verify = ["udp:127.0.0.1:$VERIFY_PORT"]
listener_profiles = { "udp:127.0.0.1:$SIGN_PORT" = "global", "udp:127.0.0.1:$VERIFY_PORT" = "global" }
workers = $WORKERS
call_log = "$work/calls.sqlite"
EOF
"$shaken" config check "$work/shaken.toml" >&2
"$shaken" serve --config "$work/shaken.toml" > "$work/serve.out" 2> "$work/serve.log" &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 100); do
  grep -q '^ready' "$work/serve.out" 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
  sleep 0.2
done
grep -q '^ready' "$work/serve.out" || { echo "shaken serve did not start" >&2; exit 1; }

fresh_ids() { python3 "$peers/gen_identities.py" "$pki/sp.key" "$X5U" "$1" "$work/ids.csv"; }

max_clean_rate() { # SCENARIO PORT -> the highest clean rate
  local best=0 line ok calls retr
  for r in $RATES; do
    calls=$(( r * 5 ))
    fresh_ids "$calls"
    line=$("$peers/sipp_run.sh" "$peers/$1" "$work/ids.csv" "127.0.0.1:$2" "$calls" "$r")
    echo "  shaken $1 rate=$r: $line" >&2
    ok=$(echo "$line" | sed -E 's/.*code_302=([0-9]+).*/\1/')
    retr=$(echo "$line" | sed -E 's/.*invite_retrans=([0-9]+).*/\1/')
    if [ "$ok" -eq "$calls" ] && [ "$retr" -eq 0 ]; then best=$r; else break; fi
  done
  echo "$best"
}

# 3. The same load against shaken.
ours_verify=$(max_clean_rate uac-verify.xml "$VERIFY_PORT")
echo "shaken_verify_cps=$ours_verify"
ours_sign=$(max_clean_rate uac-sign.xml "$SIGN_PORT")
echo "shaken_sign_cps=$ours_sign"
ratio() { python3 -c "import sys; a, b = map(float, sys.argv[1:]); print(f'{a / b:.2f}' if b else 'nan')" "$1" "$2"; }
echo "sign_ratio_vs_kamailio=$(ratio "$ours_sign" "$kam_sign")"
echo "verify_ratio_vs_kamailio=$(ratio "$ours_verify" "$kam_verify")"
echo "workdir=$work" >&2
