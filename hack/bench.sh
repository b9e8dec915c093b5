#!/usr/bin/env bash
# `make bench`: the store Go benchmarks, then the publish load test of Herald (--fsync always)
# against NATS JetStream (file storage, once with sync_interval: always, once with its default
# of an fsync every 2 minutes), for two workloads:
#   unbatched  one message per request, one publisher, sequential
#   batched    BATCH messages per request, CONCURRENCY requests in flight
# Writes the results into docs/benchmarks.md between the bench:begin/bench:end markers (the
# hand-written notes around them are kept). Every case runs for a fixed time; nothing asserts
# on timings. Servers listen on 127.0.0.1 (random ports) with data under a temp folder.
#
# Environment knobs (defaults in brackets):
#   BENCH_DURATION [10s]  measured time per case      BENCH_WARMUP [1s]  unmeasured lead-in
#   HERALD_BATCH [250] HERALD_CONCURRENCY [4] HERALD_PARTITIONS [1]   Herald's batched case
#   NATS_BATCH [HERALD_BATCH] NATS_CONCURRENCY [HERALD_CONCURRENCY]   JetStream's batched case
#   STORE_BENCHTIME [1s]  -benchtime of the store benchmarks (STORE_BENCH=0 skips them)
#   BENCH_DOC [docs/benchmarks.md]  BENCH_KEEP=1 keeps the temp folder (logs, JSON results)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${HERALD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald}
duration=${BENCH_DURATION:-10s}
warmup=${BENCH_WARMUP:-1s}
h_batch=${HERALD_BATCH:-250}
h_conc=${HERALD_CONCURRENCY:-4}
h_parts=${HERALD_PARTITIONS:-1}
n_batch=${NATS_BATCH:-$h_batch}
n_conc=${NATS_CONCURRENCY:-$h_conc}
size=1024
doc=${BENCH_DOC:-$root/docs/benchmarks.md}
log() { echo "bench: $*" >&2; }
command -v jq >/dev/null || { log "jq is required"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/herald-bench.XXXXXX")
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools ---------------------------------------------------------------------------------
nats_dir=$cache/tools/nats-server-$NATS_SERVER_VERSION
nats_server=$nats_dir/nats-server
if [ ! -x "$nats_server" ]; then
  log "installing nats-server $NATS_SERVER_VERSION into $nats_dir"
  mkdir -p "$nats_dir"
  (cd "$tmp" && GOWORK=off GOFLAGS=-buildvcs=false GOBIN=$nats_dir go install "github.com/nats-io/nats-server/v2@$NATS_SERVER_VERSION")
fi
log "building herald and natsbench"
(cd "$root" && go build -o "$tmp/herald" .)
GOWORK=off go -C "$root/test/bench/natsbench" build -o "$tmp/natsbench" .

# --- store benchmarks ------------------------------------------------------------------------
store_out=$tmp/store-bench.txt
if [ "${STORE_BENCH:-1}" = 1 ]; then
  log "store benchmarks (-benchtime ${STORE_BENCHTIME:-1s})"
  (cd "$root" && go test -run='^$' -bench=. -benchmem -benchtime="${STORE_BENCHTIME:-1s}" -timeout 4m ./broker/store/) \
    >"$store_out" 2>&1 || echo "(go test failed: exit $?)" >>"$store_out"
else
  echo "(skipped: STORE_BENCH=0)" >"$store_out"
fi

# --- servers ---------------------------------------------------------------------------------
# wait_log FILE PATTERN: wait up to 30 s for PATTERN in FILE; prints the matching line.
wait_log() {
  local i
  for i in $(seq 300); do
    if grep -m1 -E "$2" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "timed out waiting for /$2/ in $1:"; tail -20 "$1" >&2; return 1
}
stop_server() { # pid
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# start_herald NAME -> sets srv_pid, srv_url
start_herald() {
  local dir=$tmp/$1
  mkdir -p "$dir"
  "$tmp/herald" broker --data-dir "$dir/data" --listen 127.0.0.1:0 --fsync always --log-level info >"$dir/log" 2>&1 &
  srv_pid=$!
  pids+=("$srv_pid")
  local line
  line=$(wait_log "$dir/log" 'broker ready')
  srv_url=http://$(sed -E 's/.*listen=([^ ]+).*/\1/' <<<"$line")
}

# start_nats NAME always|default -> sets srv_pid, srv_url
start_nats() {
  local dir=$tmp/$1 sync=
  mkdir -p "$dir"
  [ "$2" = always ] && sync='sync_interval: always'
  cat >"$dir/nats.conf" <<EOF
listen: 127.0.0.1:-1
jetstream {
  store_dir: "$dir/data"
  $sync
}
EOF
  "$nats_server" -c "$dir/nats.conf" >"$dir/log" 2>&1 &
  srv_pid=$!
  pids+=("$srv_pid")
  wait_log "$dir/log" 'Server is ready' >/dev/null
  srv_url=nats://$(grep -m1 'Listening for client connections on' "$dir/log" | sed -E 's/.*connections on ([^ ]+).*/\1/')
}

# cpu_ticks PID: user+system CPU time of a running process, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# run_case NAME SYSTEM WORKLOAD: runs one case on a fresh server and data folder; JSON in
# $tmp/NAME.json, with the CPU time the server and the load generator used added to it.
run_case() {
  local name=$1 system=$2 workload=$3 out=$tmp/$1.json
  case $system in
    herald) start_herald "$name" ;;
    nats-always) start_nats "$name" always ;;
    nats-default) start_nats "$name" default ;;
  esac
  log "$name: $system $workload ($srv_url, ${duration} after ${warmup} warm-up)"
  local common=(--size "$size" --duration "$duration" --warmup "$warmup" --output json --label "$system")
  local cmd
  case $system/$workload in
    herald/unbatched) cmd=("$tmp/herald" bench "${common[@]}" --batch 1 --concurrency 1) ;;
    herald/unbatched-raw) cmd=("$tmp/herald" bench "${common[@]}" --mode raw --batch 1 --concurrency 1) ;;
    herald/batched) cmd=("$tmp/herald" bench "${common[@]}" --partitions "$h_parts" --batch "$h_batch" --concurrency "$h_conc") ;;
    nats-*/unbatched) cmd=("$tmp/natsbench" "${common[@]}" --batch 1 --concurrency 1) ;;
    nats-*/batched) cmd=("$tmp/natsbench" "${common[@]}" --batch "$n_batch" --concurrency "$n_conc") ;;
  esac
  local s0 s1 t0 t1 tf=$tmp/$name/time
  s0=$(cpu_ticks "$srv_pid")
  t0=$EPOCHREALTIME
  if ! { TIMEFORMAT='cpu %U %S'; time "${cmd[@]}" --server "$srv_url" >"$out.tmp"; } 2>"$tf"; then
    log "$name failed:"; cat "$tf" >&2; exit 1
  fi
  t1=$EPOCHREALTIME
  s1=$(cpu_ticks "$srv_pid")
  stop_server "$srv_pid"
  rm -rf "$tmp/$name/data"
  # CPU per message is approximate: the CPU times cover the warm-up too, so divide by the
  # messages of the whole wall time at the measured rate.
  jq --argjson srv "$(((s1 - s0)))" --argjson hz "$hz" --argjson wall "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" \
    --argjson cli "$(awk '/^cpu /{print $2 + $3}' "$tf")" \
    '. + {serverCpuSeconds: ($srv/$hz), clientCpuSeconds: $cli, wallSeconds: $wall,
          serverUsPerMsg: (if .msgPerSec > 0 then $srv/$hz*1e6/(.msgPerSec*$wall) else 0 end),
          clientUsPerMsg: (if .msgPerSec > 0 then $cli*1e6/(.msgPerSec*$wall) else 0 end)}' "$out.tmp" >"$out"
  rm -f "$out.tmp"
  jq -r '"bench:   \(.msgPerSec|floor) msg/s  \(.mbPerSec*100|floor/100) MB/s  p50 \(.p50Ms) ms  p99 \(.p99Ms) ms  p99.9 \(.p999Ms) ms  CPU/msg server \(.serverUsPerMsg|floor) µs client \(.clientUsPerMsg|floor) µs"' "$out" >&2
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
run_case herald-unbatched herald unbatched
run_case herald-unbatched-raw herald unbatched-raw
run_case nats-always-unbatched nats-always unbatched
run_case nats-default-unbatched nats-default unbatched
run_case herald-batched herald batched
run_case nats-always-batched nats-always batched
run_case nats-default-batched nats-default batched

# --- push ------------------------------------------------------------------------------------
# run_push NAME throughput|latency DEAD: a broker, `herald sink` as the endpoint and a push
# subscription (raw, maxInFlight 64). throughput: preload the topic with PUSH_MESSAGES [200000], then
# create the subscription (startAt earliest) and measure how fast the sink receives all of it.
# latency: subscription first, then one sequential publisher; the sink measures publish-to-
# receive time from each push's Herald-Publish-Time header. DEAD=1 adds a second push
# subscription whose endpoint refuses connections.
run_push() {
  local name=$1 kind=$2 dead=$3 dir=$tmp/$1 sink line published
  start_herald "$name"
  local hpid=$srv_pid
  "$tmp/herald" sink --listen 127.0.0.1:0 --quiet >"$dir/sink.out" 2>"$dir/sink.log" &
  local spid=$!
  pids+=("$spid")
  line=$(wait_log "$dir/sink.log" 'listening on')
  sink=http://$(sed -E 's/.*listening on ([^ ]+).*/\1/' <<<"$line")
  local put=(curl -sf -XPUT -H 'Content-Type: application/json')
  "${put[@]}" "$srv_url/v1/topics/push" -d '{"partitions":4}' >/dev/null
  local sub='{"topic":"push","startAt":"earliest","push":{"endpoint":"'"$sink"'/","maxInFlight":64}}'
  local deadsub='{"topic":"push","startAt":"earliest","push":{"endpoint":"http://127.0.0.1:9/","maxInFlight":64}}'
  local pub=(--server "$srv_url" --topic push --partitions 4 --size "$size" --warmup 0s --output json)
  if [ "$dead" = 1 ]; then "${put[@]}" "$srv_url/v1/subscriptions/dead" -d "$deadsub" >/dev/null; fi
  if [ "$kind" = throughput ]; then
    "$tmp/herald" bench "${pub[@]}" --batch 100 --concurrency 2 --messages "${PUSH_MESSAGES:-200000}" >"$dir/pub.json"
    "${put[@]}" "$srv_url/v1/subscriptions/to-sink" -d "$sub" >/dev/null
  else
    "${put[@]}" "$srv_url/v1/subscriptions/to-sink" -d "$sub" >/dev/null
    "$tmp/herald" bench "${pub[@]}" --batch 1 --concurrency 1 --duration "$duration" >"$dir/pub.json"
  fi
  published=$(jq .messages "$dir/pub.json")
  log "$name: $published messages published; waiting for the sink"
  local i u=0
  for i in $(seq 1800); do
    u=$(curl -sf "$sink/stats" | jq .unique)
    [ "$u" -ge "$published" ] && break
    sleep 0.1
  done
  curl -sf "$sink/stats" >"$dir/sink.json"
  stop_server "$spid"
  stop_server "$hpid"
  jq --argjson published "$published" --arg name "$name" '
    . as $s | {name: $name, published: $published, received: .unique, duplicates: .duplicates,
      seconds: (((.lastAt | sub("\\.[0-9]+"; "") | sub("Z$"; "Z") | fromdateiso8601) + (.lastAt | capture("\\.(?<f>[0-9]+)") .f | ("0." + .) | tonumber))
              - ((.firstAt | sub("\\.[0-9]+"; "") | fromdateiso8601) + (.firstAt | capture("\\.(?<f>[0-9]+)") .f | ("0." + .) | tonumber))),
      p50Ms: .latencyP50Ms, p99Ms: .latencyP99Ms, p999Ms: .latencyP999Ms}
    | . + {msgPerSec: (if .seconds > 0 then .received / .seconds else 0 end)}' "$dir/sink.json" >"$tmp/$name.json"
  jq -r '"bench:   push \(.received)/\(.published) received, \(.msgPerSec|floor) msg/s, publish→endpoint p50 \(.p50Ms) ms p99 \(.p99Ms) ms"' "$tmp/$name.json" >&2
}
if [ "${PUSH_BENCH:-1}" = 1 ]; then
  run_push push-throughput throughput 0
  run_push push-throughput-dead throughput 1
  run_push push-latency latency 0
  run_push push-latency-dead latency 1
fi
# --- operator at scale ------------------------------------------------------------------------
# 1,000 Topics and 1,000 Subscriptions applied at once to envtest with a real broker
# (controllers/scale_test.go); then a steady-state window counting the operator's API writes.
scale_md=$tmp/scale.md
if [ "${SCALE_BENCH:-1}" = 1 ]; then
  log "operator scale test (${SCALE_OBJECTS:-1000} Topics + Subscriptions, steady state ${SCALE_STEADY:-60s})"
  if ! (cd "$root" && HERALD_SCALE=1 HERALD_SCALE_REPORT="$scale_md" HERALD_SCALE_OBJECTS="${SCALE_OBJECTS:-1000}" \
    HERALD_SCALE_STEADY="${SCALE_STEADY:-60s}" KUBEBUILDER_ASSETS=$("$here/build-control-plane.sh") \
    go test -count=1 -run '^TestScale$' -timeout 20m ./controllers/ >"$tmp/scale.log" 2>&1); then
    log "scale test failed:"; tail -20 "$tmp/scale.log" >&2
    echo "(the scale test failed; see its log)" >"$scale_md"
  fi
fi
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ----------------------------------------------------------------------------------
f() { jq -r "$2" "$tmp/$1.json"; }
row() { # label case
  jq -r --arg l "$1" '"| \($l) | \(.msgPerSec|round) | \(.mbPerSec*10|round/10) | \(.p50Ms*1000|round/1000) | \(.p99Ms*1000|round/1000) | \(.p999Ms*1000|round/1000)\(if .requests < 1000 then "*" else "" end) | \(.requests) | \(.serverUsPerMsg*10|round/10) | \(.clientUsPerMsg*10|round/10) |"' "$tmp/$2.json"
}
ratio() { # a b field -> a/b with two decimals
  jq -rn --argjson a "$(f "$1" ".$3")" --argjson b "$(f "$2" ".$3")" 'if $b == 0 then "–" else ($a/$b*100|round/100|tostring) + "×" end'
}
yesno() { if [ "$(jq -rn "$1")" = true ]; then echo "**met**"; else echo "**not met**"; fi; }
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
rev=$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(cd "$root" && git status --porcelain 2>/dev/null | head -1)" ]; then rev="$rev (with uncommitted changes)"; fi
hb=$(f herald-batched '.msgPerSec|round')
hu99=$(f herald-unbatched '.p99Ms*1000|round/1000')
hu999=$(f herald-unbatched '.p999Ms*1000|round/1000')

gen=$tmp/generated.md
{
  echo "<!-- bench:begin — generated by hack/bench.sh (make bench); edit outside the markers -->"
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') at commit $rev."
  echo
  echo "- Machine: $(nproc) CPUs, $cpu, $(uname -sr); $(go version | cut -d' ' -f3-)."
  echo "- Load average (1/5/15 min) $load_start before the load tests, $load_end after: other work shared the CPUs."
  echo "- Herald: \`herald broker --fsync always\` (a publish is answered only after its fsync). NATS: nats-server $NATS_SERVER_VERSION, JetStream file storage, one replica."
  echo "- Each case: a fresh server and data folder on 127.0.0.1, ${warmup} warm-up, then ${duration} measured; $size-byte random messages."
  echo "  Latency is per request, over every request of the case: one message unbatched, one whole batch batched."
  echo "  CPU µs/msg: user+system CPU time of the server process and of the load generator over the case"
  echo "  (warm-up included), divided by the messages sent in that time at the measured rate; approximate."
  echo "- Unbatched: one publisher, one message per request, sequential (Herald: JSON \`{\"messages\":[{\"data\":base64}]}\`;"
  echo "  *raw* = the body is the message, \`application/octet-stream\`; NATS: synchronous \`js.Publish\`)."
  echo "- Batched: Herald $h_batch messages per JSON request, $h_conc requests in flight, $h_parts partition(s);"
  echo "  NATS $n_batch \`js.PublishAsync\` per batch then wait for their acks, $n_conc batches in flight (one connection)."
  echo
  echo "| Workload | System | msg/s | MB/s | p50 ms | p99 ms | p99.9 ms | requests | server CPU µs/msg | client CPU µs/msg |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  row "unbatched | Herald (fsync always)" herald-unbatched
  row "unbatched | Herald raw body (fsync always)" herald-unbatched-raw
  row "unbatched | JetStream sync_interval always" nats-always-unbatched
  row "unbatched | JetStream default (fsync every 2 min)" nats-default-unbatched
  row "batched | Herald (fsync always)" herald-batched
  row "batched | JetStream sync_interval always" nats-always-batched
  row "batched | JetStream default (fsync every 2 min)" nats-default-batched
  echo
  echo "\\* fewer than 1,000 requests: p99.9 is the maximum."
  echo
  echo "Ratios Herald ÷ JetStream (throughput: higher is better for Herald; p99: lower is better for Herald):"
  echo
  echo "| Workload | msg/s ÷ sync always | msg/s ÷ default | p99 ÷ sync always | p99 ÷ default |"
  echo "|---|---:|---:|---:|---:|"
  for w in unbatched batched; do
    echo "| $w | $(ratio herald-$w nats-always-$w msgPerSec) | $(ratio herald-$w nats-default-$w msgPerSec) | $(ratio herald-$w nats-always-$w p99Ms) | $(ratio herald-$w nats-default-$w p99Ms) |"
  done
  echo
  echo "Goals for Herald with fsync always:"
  echo "- batched ≥ 100,000 msg/s: $hb msg/s — $(yesno "$hb >= 100000")"
  echo "- unbatched p99 < 1 ms: $hu99 ms — $(yesno "$hu99 < 1")"
  echo "- unbatched p99.9 < 2 ms: $hu999 ms — $(yesno "$hu999 < 2")"
  echo
  if [ "${PUSH_BENCH:-1}" = 1 ]; then
    echo "Push (\`herald broker --fsync always\` pushing to \`herald sink\` on 127.0.0.1; raw format, maxInFlight 64, 4 partitions, $size-byte messages):"
    echo
    echo "- *throughput*: the topic is preloaded with ${PUSH_MESSAGES:-200000} messages (batched publishes), then the push subscription is created"
    echo "  (startAt earliest) and msg/s is the rate at which the sink received all of it (first to last 2xx)."
    echo "- *latency*: the subscription exists first; one sequential publisher for ${duration}; publish→endpoint time per"
    echo "  message, from its Herald-Publish-Time header to its arrival at the sink."
    echo "- *+ dead endpoint*: the same with a second push subscription on the topic whose endpoint refuses connections."
    echo
    echo "| Case | messages | received | msg/s | publish→endpoint p50 ms | p99 ms | p99.9 ms |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    for c in push-throughput push-throughput-dead push-latency push-latency-dead; do
      # Latency of a preloaded backlog is queueing time, not delivery latency: not shown.
      jq -r 'def ms(x): if (.name | test("throughput")) then "–" else (x*1000|round/1000|tostring) end;
        "| \(.name | sub("push-"; "") | sub("-dead"; " + dead endpoint")) | \(.published) | \(.received) | \(.msgPerSec|round) | \(ms(.p50Ms)) | \(ms(.p99Ms)) | \(ms(.p999Ms)) |"' "$tmp/$c.json"
    done
    pt=$(f push-throughput '.msgPerSec|round')
    echo
    echo "Goal: push ≥ 20,000 msg/s: $pt msg/s — $(yesno "$pt >= 20000")"
    echo
  fi
  if [ "${SCALE_BENCH:-1}" = 1 ] && [ -s "$scale_md" ]; then
    echo "Operator at scale (\`HERALD_SCALE=1 go test -run TestScale ./controllers/\`: envtest + a real broker, production settings):"
    echo
    cat "$scale_md"
    echo
  fi
  echo "Store benchmarks (\`go test -run='^\$' -bench=. -benchmem -benchtime=${STORE_BENCHTIME:-1s} ./broker/store/\`):"
  echo
  echo '```'
  if grep -q '^Benchmark' "$store_out"; then
    grep -E '^(Benchmark|goos|goarch|cpu|pkg|PASS|FAIL|ok)' "$store_out"
  else
    echo "no store benchmarks yet:"
    tail -5 "$store_out"
  fi
  echo '```'
  echo "<!-- bench:end -->"
} >"$gen"

mkdir -p "$(dirname "$doc")"
if [ -f "$doc" ] && grep -q '^<!-- bench:begin' "$doc" && grep -q '^<!-- bench:end' "$doc"; then
  awk -v gen="$gen" '
    /^<!-- bench:begin/ { while ((getline l < gen) > 0) print l; skip = 1; next }
    /^<!-- bench:end/ { skip = 0; next }
    !skip { print }' "$doc" >"$tmp/doc.md"
  mv "$tmp/doc.md" "$doc"
else
  { echo "# Benchmarks"; echo; echo "Run \`make bench\` to refresh the generated part."; echo; cat "$gen"
    echo; echo "## Notes"; echo; echo "(What limits Herald: to be written.)"; } >"$doc"
fi
log "wrote $doc"
sed -n '/^| Workload | System/,/^$/p' "$doc" >&2
