#!/usr/bin/env bash
# Measures chat completions through the gateway beside the same requests sent
# to the upstream directly, in one run: requests/s and latency with wrk, and
# the time to the first streamed byte with curl. The upstream is
# dev/fakeupstream in a process of its own; metering and limits are on.
#
#   DATABASE_URL=postgres://…/db dev/bench/gateway.sh    (a database it may fill)
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${DATABASE_URL:?set DATABASE_URL to a PostgreSQL database the benchmark may write to}"
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
duration=${DURATION:-10s}
conns=${CONNECTIONS:-32}
up=127.0.0.1:9100
gw=127.0.0.1:3100
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

go build -o bin/modelswitch . && go build -o bin/fakeupstream ./dev/fakeupstream
./bin/fakeupstream -addr "$up" & pids+=($!)
cat >"$work/models.yaml" <<YAML
models:
  - {id: fake/model, provider: openai, base_url: "http://$up/v1", input_price: 0.15, output_price: 0.6, max_output_tokens: 1000}
YAML
PORT=3100 MODELS_FILE="$work/models.yaml" SIGNUP_CREDITS=1000000 ./bin/modelswitch serve >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 1 100); do curl -fs "http://$gw/healthz" >/dev/null && break; sleep 0.1; done

json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
email="bench$(date +%s%N)@example.com"
curl -fsS -X POST "http://$gw/api/auth/signup" -H 'Content-Type: application/json' -d "{\"email\":\"$email\",\"password\":\"bench-password\"}" >/dev/null
jwt=$(curl -fsS -X POST "http://$gw/api/auth/login" -H 'Content-Type: application/json' -d "{\"email\":\"$email\",\"password\":\"bench-password\"}" | json '["token"]')
mk=$(curl -fsS -X POST "http://$gw/api/billing-keys" -H 'Content-Type: application/json' -H "Authorization: Bearer $jwt" -d '{"name":"bench"}' | json '["key"]')
ms=$(curl -fsS -X POST "http://$gw/api/keys" -H 'Content-Type: application/json' -H "Authorization: Bearer $mk" -d '{"name":"bench"}' | json '["key"]')

for mode in plain stream; do
  stream=false; [ "$mode" = stream ] && stream=true
  cat >"$work/$mode.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"MODEL","stream":$stream,"messages":[{"role":"user","content":"Say hello."}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $ms"
LUA
  for target in upstream gateway; do
    model=model url="http://$up/v1/chat/completions"
    [ "$target" = gateway ] && model=fake/model url="http://$gw/v1/chat/completions"
    sed "s#MODEL#$model#" "$work/$mode.lua" >"$work/run.lua"
    out=$(wrk -t1 -c"$conns" -d"$duration" --latency -s "$work/run.lua" "$url")
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p50=$(echo "$out" | awk '$1=="50%" {print $2}')
    p99=$(echo "$out" | awk '$1=="99%" {print $2}')
    errors=$(echo "$out" | awk '/Non-2xx/ {print $4}')
    printf '%-7s %-9s %10s req/s  p50 %8s  p99 %8s  non-2xx %s\n' "$mode" "$target" "$rps" "$p50" "$p99" "${errors:-0}"
  done
done

ttfb() {
  local url=$1 model=$2
  for _ in $(seq 1 50); do
    curl -s -o /dev/null -w '%{time_starttransfer}\n' "$url" -H 'Content-Type: application/json' -H "Authorization: Bearer $ms" \
      -d "{\"model\":\"$model\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"Say hello.\"}]}"
  done | sort -n | awk '{a[NR]=$1} END {printf "p50 %.2f ms  p99 %.2f ms\n", a[int(NR/2)]*1000, a[int(NR*0.99)]*1000}'
}
echo "time to first byte, streamed, upstream directly: $(ttfb "http://$up/v1/chat/completions" model)"
echo "time to first byte, streamed, through gateway:   $(ttfb "http://$gw/v1/chat/completions" fake/model)"

# The ledger is exact afterwards: every answered request is one usage entry.
sleep 1
curl -fsS "http://$gw/api/balance" -H "Authorization: Bearer $mk"; echo
