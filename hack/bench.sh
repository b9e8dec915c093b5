#!/usr/bin/env bash
# `make bench`: the store Go benchmarks, then the publish load test of Herald (--fsync always)
# against NATS JetStream (file storage, once with sync_interval: always, once with its default
# of an fsync every 2 minutes), for two workloads:
#   unbatched  one message per request, one publisher, sequential
#   batched    BATCH messages per request, CONCURRENCY requests in flight
# Writes the results into docs/benchmarks.md between the bench:begin/bench:end markers (the
# hand-written notes around them are kept). Every case runs for a fixed time; nothing asserts
# on timings. Servers listen on 127.0.0.1 (random ports) with data under a temp folder.
# Replicated section: the same two workloads on three local brokers of each system, Herald with
# replicationFactor 3 (publishing to the partition leader) against a 3-node JetStream cluster
# with an R3 file stream; when Herald's cluster is not ready within HERALD_CLUSTER_TIMEOUT, its
# rows say "not available: <reason>" and the JetStream rows are still measured.
#
# Environment knobs (defaults in brackets):
#   BENCH_DURATION [10s]  measured time per case      BENCH_WARMUP [1s]  unmeasured lead-in
#   HERALD_BATCH [250] HERALD_CONCURRENCY [4] HERALD_PARTITIONS [1]   Herald's batched case
#   NATS_BATCH [HERALD_BATCH] NATS_CONCURRENCY [HERALD_CONCURRENCY]   JetStream's batched case
#   STORE_BENCHTIME [1s]  -benchtime of the store benchmarks (STORE_BENCH=0 skips them)
#   BENCH_DOC [docs/benchmarks.md]  BENCH_KEEP=1 keeps the temp folder (logs, JSON results)
#   BENCH_REPLICATED [1]  0 skips the replicated section (RF 3 on 3 local brokers of each system)
#   BENCH_ONLY []  "replicated": run only that section and replace only its part of BENCH_DOC
#   HERALD_CLUSTER_TIMEOUT [60]  seconds for Herald's 3 nodes and the RF 3 topic to be ready
#   NATS_R3_DEFAULT [1]  0 skips the R3 cases with JetStream's default sync (keeps sync always)
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
replicated=${BENCH_REPLICATED:-1}
only=${BENCH_ONLY:-}
h_cluster_timeout=${HERALD_CLUSTER_TIMEOUT:-60}
push_bench=${PUSH_BENCH:-1}
scale_bench=${SCALE_BENCH:-1}
if [ -n "$only" ]; then push_bench=0 scale_bench=0; fi
log() { echo "bench: $*" >&2; }
command -v jq >/dev/null || { log "jq is required"; exit 1; }
case $only in
  '') ;;
  replicated) [ "$replicated" = 1 ] || { log "BENCH_ONLY=replicated with BENCH_REPLICATED=$replicated: nothing to run"; exit 1; } ;;
  *) log "BENCH_ONLY must be empty or replicated, not '$only'"; exit 1 ;;
esac

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
# herald_unavailable: why Herald's replicated cases cannot run (set once, for all of them).
herald_unavailable=
if ! (cd "$root" && go build -o "$tmp/herald" .) 2>"$tmp/herald-build.log"; then
  cat "$tmp/herald-build.log" >&2
  # The replicated section alone still measures JetStream when Herald does not build.
  [ "$only" = replicated ] || { log "herald does not build"; exit 1; }
  herald_unavailable="herald does not build: $(grep -v '^#' "$tmp/herald-build.log" | head -1)"
fi
GOWORK=off go -C "$root/test/bench/natsbench" build -o "$tmp/natsbench" .

# --- store benchmarks ------------------------------------------------------------------------
store_out=$tmp/store-bench.txt
if [ -n "$only" ]; then
  echo "(skipped: BENCH_ONLY=$only)" >"$store_out"
elif [ "${STORE_BENCH:-1}" = 1 ]; then
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

# cpu_ticks PID...: user+system CPU time of running processes, in clock ticks (0 for a gone one).
cpu_ticks() {
  local p t=0
  for p; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}
hz=$(getconf CLK_TCK)

# measure NAME "PID..." CMD...: runs the load generator CMD (JSON on stdout) and writes it to
# $tmp/NAME.json with the CPU time that the servers PID... and CMD used added to it. Returns 1
# when CMD fails; its stderr is then in $tmp/NAME/time.
measure() {
  local name=$1 srv=$2 out=$tmp/$1.json tf=$tmp/$1/time s0 s1 t0 t1
  shift 2
  # shellcheck disable=SC2086 # srv is a list of pids
  s0=$(cpu_ticks $srv)
  t0=$EPOCHREALTIME
  if ! { TIMEFORMAT='cpu %U %S'; time "$@" >"$out.tmp"; } 2>"$tf"; then
    rm -f "$out.tmp"
    return 1
  fi
  t1=$EPOCHREALTIME
  # shellcheck disable=SC2086
  s1=$(cpu_ticks $srv)
  # CPU per message is approximate: the CPU times cover the warm-up too, so divide by the
  # messages of the whole wall time at the measured rate.
  jq --argjson srv "$(((s1 - s0)))" --argjson hz "$hz" --argjson wall "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" \
    --argjson cli "$(awk '/^cpu /{print $2 + $3}' "$tf")" \
    '. + {serverCpuSeconds: ($srv/$hz), clientCpuSeconds: $cli, wallSeconds: $wall,
          serverUsPerMsg: (if .msgPerSec > 0 then $srv/$hz*1e6/(.msgPerSec*$wall) else 0 end),
          clientUsPerMsg: (if .msgPerSec > 0 then $cli*1e6/(.msgPerSec*$wall) else 0 end)}' "$out.tmp" >"$out"
  rm -f "$out.tmp"
}
summary() { # NAME: one line of the results of a case
  jq -r '"bench:   \(.msgPerSec|floor) msg/s  \(.mbPerSec*100|floor/100) MB/s  p50 \(.p50Ms) ms  p99 \(.p99Ms) ms  p99.9 \(.p999Ms) ms  CPU/msg server \(.serverUsPerMsg|floor) µs client \(.clientUsPerMsg|floor) µs"' "$tmp/$1.json" >&2
}

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
  if ! measure "$name" "$srv_pid" "${cmd[@]}" --server "$srv_url"; then
    log "$name failed:"; cat "$tmp/$name/time" >&2; exit 1
  fi
  stop_server "$srv_pid"
  rm -rf "$tmp/$name/data"
  summary "$name"
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
if [ -z "$only" ]; then
  run_case herald-unbatched herald unbatched
  run_case herald-unbatched-raw herald unbatched-raw
  run_case nats-always-unbatched nats-always unbatched
  run_case nats-default-unbatched nats-default unbatched
  run_case herald-batched herald batched
  run_case nats-always-batched nats-always batched
  run_case nats-default-batched nats-default batched
fi

# --- replicated (RF 3, 3 nodes) ----------------------------------------------------------------
# Three brokers of each system on 127.0.0.1, a fresh cluster and data folders per case. Herald:
# 3 × `herald broker --node-id nN --cluster-peers …`, topic bench with 1 partition and
# replicationFactor 3, `herald bench` against the partition leader. NATS: 3 nats-servers in one
# JetStream cluster, an R3 file stream, natsbench connected to the stream leader's server.

# free_ports N: N distinct TCP ports on 127.0.0.1, below the ephemeral range, with nothing
# listening on them (racy, but nothing else here binds fixed ports).
free_ports() {
  local out=() p
  while [ "${#out[@]}" -lt "$1" ]; do
    p=$((20000 + RANDOM % 12000))
    [[ " ${out[*]} " == *" $p "* ]] && continue
    (: </dev/tcp/127.0.0.1/"$p") 2>/dev/null && continue
    out+=("$p")
  done
  echo "${out[@]}"
}
alive() { local s; s=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) && [ -n "$s" ] && [ "$s" != Z ]; }
# cl_pids: the servers of the running cluster; cl_url: where the load generator connects.
cl_pids=()
cl_url=
stop_cluster() {
  local p
  for p in "${cl_pids[@]}"; do stop_server "$p"; done
  cl_pids=()
}

# start_nats_cluster NAME always|default: cl_url is the three client URLs, comma-separated.
start_nats_cluster() {
  local dir=$tmp/$1 sync= i routes= ports urls=()
  [ "$2" = always ] && sync='sync_interval: always'
  read -r -a ports <<<"$(free_ports 3)"
  for i in 0 1 2; do routes+="${routes:+, }nats-route://127.0.0.1:${ports[i]}"; done
  cl_pids=()
  for i in 1 2 3; do
    mkdir -p "$dir/n$i"
    cat >"$dir/n$i/nats.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:-1
jetstream {
  store_dir: "$dir/n$i/data"
  $sync
}
cluster {
  name: bench
  listen: 127.0.0.1:${ports[i - 1]}
  routes: [$routes]
}
EOF
    "$nats_server" -c "$dir/n$i/nats.conf" >"$dir/n$i/log" 2>&1 &
    cl_pids+=("$!")
    pids+=("$!")
  done
  for i in 1 2 3; do
    wait_log "$dir/n$i/log" 'Server is ready' >/dev/null
    urls+=("nats://$(grep -m1 'Listening for client connections on' "$dir/n$i/log" | sed -E 's/.*connections on ([^ ]+).*/\1/')")
  done
  # Every node knows the meta leader; natsbench still retries creating the stream for a while.
  for i in 1 2 3; do
    wait_log "$dir/n$i/log" 'Self is new JetStream cluster metadata leader|JetStream cluster new (remote )?metadata leader' >/dev/null
  done
  cl_url=$(IFS=,; echo "${urls[*]}")
}

# start_herald_cluster NAME: starts 3 nodes, waits until every node's /v1/cluster lists 3 ready
# members, creates the topic bench (1 partition, replicationFactor 3) and waits until its
# partition has 3 in-sync replicas; cl_url is then the partition leader's URL. All within
# HERALD_CLUSTER_TIMEOUT; otherwise returns 1 with the reason in cl_reason.
start_herald_cluster() {
  local dir=$tmp/$1 i ports peers= deadline state code last= leader st
  local -A url=()
  cl_pids=() cl_url= cl_reason=
  read -r -a ports <<<"$(free_ports 3)"
  for i in 1 2 3; do peers+="${peers:+,}n$i=127.0.0.1:${ports[i - 1]}"; done
  for i in 1 2 3; do
    mkdir -p "$dir/n$i"
    url[n$i]=http://127.0.0.1:${ports[i - 1]}
    "$tmp/herald" broker --data-dir "$dir/n$i/data" --listen "127.0.0.1:${ports[i - 1]}" --fsync always \
      --node-id "n$i" --cluster-peers "$peers" >"$dir/n$i/log" 2>&1 &
    cl_pids+=("$!")
    pids+=("$!")
  done
  deadline=$((SECONDS + h_cluster_timeout))
  # check_nodes: fails with cl_reason when a node has exited or the deadline has passed.
  check_nodes() {
    for i in 1 2 3; do
      if ! alive "${cl_pids[i - 1]}"; then
        st=0
        wait "${cl_pids[i - 1]}" 2>/dev/null || st=$?
        cl_reason="node n$i exited (status $st): $(grep -v '^[[:space:]]*$' "$dir/n$i/log" | tail -1)"
        return 1
      fi
    done
    if [ "$SECONDS" -ge "$deadline" ]; then
      cl_reason="not ready within ${h_cluster_timeout}s: $last"
      return 1
    fi
  }
  # members_ready: every node lists 3 members, all ready; otherwise says why in last.
  members_ready() {
    for i in 1 2 3; do
      if ! state=$(curl -sS -f --max-time 2 "${url[n$i]}/v1/cluster" 2>&1); then
        last="n$i: GET /v1/cluster: $state"
        return 1
      fi
      if ! jq -e '(.members | length) == 3 and all(.members[]; .ready == true)' <<<"$state" >/dev/null 2>&1; then
        last="n$i: members not all ready: $(jq -c '.members' <<<"$state" 2>/dev/null || echo "$state")"
        return 1
      fi
    done
  }
  until members_ready; do
    check_nodes || return 1
    sleep 0.25
  done
  code=$(curl -sS --max-time 10 -o "$dir/put.out" -w '%{http_code}' -XPUT -H 'Content-Type: application/json' \
    "${url[n1]}/v1/topics/bench" -d '{"partitions":1,"replicationFactor":3}' 2>"$dir/put.err") || true
  case $code in
    200 | 201) ;;
    *) cl_reason="PUT /v1/topics/bench: HTTP $code $(head -c 300 "$dir/put.out") $(cat "$dir/put.err")"; return 1 ;;
  esac
  last="topic bench not yet listed in /v1/cluster partitions"
  while :; do
    check_nodes || { cl_reason="topic bench: $cl_reason"; return 1; }
    if state=$(curl -sS -f --max-time 2 "${url[n1]}/v1/cluster" 2>&1); then
      leader=$(jq -r 'first(.partitions[]? | select(.topic == "bench" and .leader != null and ((.inSync // []) | length) >= 3) | .leader | tostring) // empty' <<<"$state" 2>/dev/null) || leader=
      if [ -n "$leader" ]; then
        cl_url=${url[$leader]:-}
        for i in 1 2 3; do [ "$leader" = "127.0.0.1:${ports[i - 1]}" ] && cl_url=${url[n$i]}; done
        if [ -n "$cl_url" ]; then
          log "herald cluster ready; partition bench/0 leader $leader ($cl_url)"
          return 0
        fi
        last="partition leader '$leader' is none of n1 n2 n3"
      else
        last="bench partitions: $(jq -c '[.partitions[]? | select(.topic == "bench")]' <<<"$state" 2>/dev/null || echo "$state")"
      fi
    else
      last="n1: GET /v1/cluster: $state"
    fi
    sleep 0.25
  done
}

# unavailable NAME REASON: the JSON of a case that could not run.
unavailable() {
  jq -n --arg r "$2" '{unavailable: ($r | gsub("[\r\n\t]+"; " ") | .[0:300])}' >"$tmp/$1.json"
  log "$1: not available: $2"
}

# run_rcase NAME SYSTEM WORKLOAD: like run_case, on a fresh 3-node cluster. A Herald case that
# cannot run (cluster not ready in time, or herald bench failing) is written as unavailable;
# after a cluster failed to come up, the next Herald case does not try again.
run_rcase() {
  local name=$1 system=$2 workload=$3 cmd
  mkdir -p "$tmp/$name"
  case $system in
    herald)
      if [ -n "$herald_unavailable" ]; then unavailable "$name" "$herald_unavailable"; return; fi
      log "$name: starting 3 herald nodes (up to ${h_cluster_timeout}s to be ready)"
      if ! start_herald_cluster "$name"; then
        herald_unavailable="Herald cluster: $cl_reason"
        stop_cluster
        unavailable "$name" "$herald_unavailable"
        return
      fi ;;
    nats-always) start_nats_cluster "$name" always ;;
    nats-default) start_nats_cluster "$name" default ;;
  esac
  log "$name: $system R3 $workload ($cl_url, ${duration} after ${warmup} warm-up)"
  local common=(--size "$size" --duration "$duration" --warmup "$warmup" --output json --label "$system-r3")
  case $system/$workload in
    # --partitions 0: publish to the RF 3 topic as created, without re-PUTting it.
    herald/unbatched) cmd=("$tmp/herald" bench "${common[@]}" --partitions 0 --batch 1 --concurrency 1) ;;
    herald/batched) cmd=("$tmp/herald" bench "${common[@]}" --partitions 0 --batch "$h_batch" --concurrency "$h_conc") ;;
    nats-*/unbatched) cmd=("$tmp/natsbench" "${common[@]}" --replicas 3 --leader --batch 1 --concurrency 1) ;;
    nats-*/batched) cmd=("$tmp/natsbench" "${common[@]}" --replicas 3 --leader --batch "$n_batch" --concurrency "$n_conc") ;;
  esac
  if ! measure "$name" "${cl_pids[*]}" "${cmd[@]}" --server "$cl_url"; then
    if [ "$system" != herald ]; then log "$name failed:"; cat "$tmp/$name/time" >&2; exit 1; fi
    stop_cluster
    unavailable "$name" "herald bench failed: $(grep -v '^cpu ' "$tmp/$name/time" | grep -v '^[[:space:]]*$' | tail -1)"
    return
  fi
  grep -h '^natsbench:' "$tmp/$name/time" >&2 || true
  stop_cluster
  rm -rf "$tmp/$name"/n?/data
  summary "$name"
}

if [ "$replicated" = 1 ]; then
  r_load_start=$(cut -d' ' -f1-3 /proc/loadavg)
  for w in unbatched batched; do
    run_rcase "herald-r3-$w" herald "$w"
    run_rcase "nats-always-r3-$w" nats-always "$w"
    if [ "${NATS_R3_DEFAULT:-1}" = 1 ]; then run_rcase "nats-default-r3-$w" nats-default "$w"; fi
  done
  r_load_end=$(cut -d' ' -f1-3 /proc/loadavg)
fi

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
if [ "$push_bench" = 1 ]; then
  run_push push-throughput throughput 0
  run_push push-throughput-dead throughput 1
  run_push push-latency latency 0
  run_push push-latency-dead latency 1
fi
# --- operator at scale ------------------------------------------------------------------------
# 1,000 Topics and 1,000 Subscriptions applied at once to envtest with a real broker
# (controllers/scale_test.go); then a steady-state window counting the operator's API writes.
scale_md=$tmp/scale.md
if [ "$scale_bench" = 1 ]; then
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
  jq -r --arg l "$1" 'if .unavailable then "| \($l) | not available: \(.unavailable | gsub("\\|"; "\\|")) | – | – | – | – | – | – | – |" else
    "| \($l) | \(.msgPerSec|round) | \(.mbPerSec*10|round/10) | \(.p50Ms*1000|round/1000) | \(.p99Ms*1000|round/1000) | \(.p999Ms*1000|round/1000)\(if .requests < 1000 then "*" else "" end) | \(.requests) | \(.serverUsPerMsg*10|round/10) | \(.clientUsPerMsg*10|round/10) |" end' "$tmp/$2.json"
}
ratio() { # a b field -> a/b with two decimals; – when either case did not run
  jq -rn --slurpfile a "$tmp/$1.json" --slurpfile b "$tmp/$2.json" --arg k "$3" '$a[0][$k] as $x | $b[0][$k] as $y
    | if ($x | type) != "number" or ($y | type) != "number" or $y == 0 then "–" else ($x/$y*100|round/100|tostring) + "×" end'
}
yesno() { if [ "$(jq -rn "$1")" = true ]; then echo "**met**"; else echo "**not met**"; fi; }
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
rev=$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(cd "$root" && git status --porcelain 2>/dev/null | head -1)" ]; then rev="$rev (with uncommitted changes)"; fi

# The replicated section, between its own markers inside the generated part, so that
# BENCH_ONLY=replicated can replace it alone.
rgen=$tmp/replicated.md
if [ "$replicated" = 1 ]; then
  r3def=${NATS_R3_DEFAULT:-1}
  {
    echo "<!-- bench:replicated:begin -->"
    echo "**Replicated (RF 3, 3 nodes)**, measured $(date -u '+%Y-%m-%d %H:%M UTC') at commit $rev;"
    echo "load average $r_load_start before these cases, $r_load_end after."
    echo
    echo "- Three brokers of each system on this one machine ($(nproc) CPUs), replicating over 127.0.0.1: the three share"
    echo "  the CPUs and the disk, so this shows the cost of the replication protocol, not of a network."
    echo "  A fresh cluster and data folders per case; server CPU µs/msg is the sum over the three nodes."
    echo "- Herald: 3 × \`herald broker --fsync always --node-id nN --cluster-peers n1=…,n2=…,n3=…\`; a topic with 1 partition and"
    echo "  \`replicationFactor: 3\`, used once all 3 replicas are in sync; \`herald bench\` publishes to the partition leader."
    echo "- NATS: 3 × nats-server $NATS_SERVER_VERSION in one JetStream cluster, a file stream with 3 replicas; natsbench publishes"
    echo "  over a connection to the stream leader's server. *sync always*: \`sync_interval: always\` on every node; with"
    echo "  replicas, nats-server then fsyncs each Raft log append (which carries every proposal queued meanwhile) and"
    echo "  syncs the stream's own files only on snapshots, so unlike one replica its in-flight batches share fsyncs."
    if [ "$r3def" = 1 ]; then
      echo "  *default*: acknowledged once a quorum stored it, fsync every 2 minutes."
    fi
    echo "- Workloads, message size, warm-up and duration as in the single-node table above; batched: Herald $h_batch messages"
    echo "  per JSON request, $h_conc in flight (one partition), NATS $n_batch \`js.PublishAsync\` per batch, $n_conc batches in flight."
    echo
    echo "| Workload | System | msg/s | MB/s | p50 ms | p99 ms | p99.9 ms | requests | server CPU µs/msg | client CPU µs/msg |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for w in unbatched batched; do
      row "$w | Herald RF 3 (fsync always)" "herald-r3-$w"
      row "$w | JetStream R3 sync_interval always" "nats-always-r3-$w"
      if [ "$r3def" = 1 ]; then row "$w | JetStream R3 default (fsync every 2 min)" "nats-default-r3-$w"; fi
    done
    echo
    echo "\\* fewer than 1,000 requests: p99.9 is the maximum."
    echo
    echo "Ratios Herald RF 3 ÷ JetStream R3 (throughput: higher is better for Herald; p99: lower is better for Herald):"
    echo
    if [ "$r3def" = 1 ]; then
      echo "| Workload | msg/s ÷ sync always | msg/s ÷ default | p99 ÷ sync always | p99 ÷ default |"
      echo "|---|---:|---:|---:|---:|"
      for w in unbatched batched; do
        echo "| $w | $(ratio herald-r3-$w nats-always-r3-$w msgPerSec) | $(ratio herald-r3-$w nats-default-r3-$w msgPerSec) | $(ratio herald-r3-$w nats-always-r3-$w p99Ms) | $(ratio herald-r3-$w nats-default-r3-$w p99Ms) |"
      done
    else
      echo "| Workload | msg/s ÷ sync always | p99 ÷ sync always |"
      echo "|---|---:|---:|"
      for w in unbatched batched; do
        echo "| $w | $(ratio herald-r3-$w nats-always-r3-$w msgPerSec) | $(ratio herald-r3-$w nats-always-r3-$w p99Ms) |"
      done
    fi
    echo "<!-- bench:replicated:end -->"
  } >"$rgen"
fi

mkdir -p "$(dirname "$doc")"
if [ "$only" = replicated ]; then
  # Replace the replicated block of the doc, or insert it where a full run puts it: after the
  # single-node goals, before the push, operator or store parts (or at the end of the block).
  if ! { [ -f "$doc" ] && grep -q '^<!-- bench:begin' "$doc" && grep -q '^<!-- bench:end' "$doc"; }; then
    log "BENCH_ONLY=replicated needs $doc with the bench:begin/bench:end markers (run the full make bench once)"
    exit 1
  fi
  if grep -q '^<!-- bench:replicated:begin' "$doc" && grep -q '^<!-- bench:replicated:end' "$doc"; then
    awk -v gen="$rgen" '
      /^<!-- bench:replicated:begin/ { while ((getline l < gen) > 0) print l; skip = 1; next }
      /^<!-- bench:replicated:end/ { skip = 0; next }
      !skip { print }' "$doc" >"$tmp/doc.md"
  else
    awk -v gen="$rgen" '
      /^<!-- bench:begin/ { in_block = 1 }
      in_block && !done && (/^(Push \(|Operator at scale|Store benchmarks)/ || /^<!-- bench:end/) {
        while ((getline l < gen) > 0) print l
        print ""
        done = 1
      }
      /^<!-- bench:end/ { in_block = 0 }
      { print }' "$doc" >"$tmp/doc.md"
  fi
  mv "$tmp/doc.md" "$doc"
  log "wrote the replicated section of $doc"
  cat "$rgen" >&2
  exit 0
fi

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
  if [ "$replicated" = 1 ]; then
    cat "$rgen"
    echo
  fi
  if [ "$push_bench" = 1 ]; then
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
  if [ "$scale_bench" = 1 ] && [ -s "$scale_md" ]; then
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
