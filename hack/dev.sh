#!/usr/bin/env bash
# The local development cluster: `make dev` (hack/dev.sh) and `make dev-down` (hack/dev.sh down).
#
# `make dev` builds bin/herald, the control plane (hack/build-control-plane.sh, cached) and helm
# (hack/tools.sh, cached); starts bin/herald-dev (test/cluster/cmd/herald-dev: etcd,
# kube-apiserver, kube-controller-manager and the pod runner that runs Herald's pods as local
# processes of bin/herald, each on its own 127.x address); installs charts/herald with helm;
# applies config/samples (and orders-consumer.yaml, the push sample's `herald sink` receiver);
# waits for the BrokerCluster's broker pod to be Ready; publishes a few messages through the pod's
# address; shows them delivered (the sink's /stats and `kubectl logs`); prints how to use the
# cluster; and stays up until Ctrl-C or
# `make dev-down`, which stop everything.
#
# Files: .dev/kubeconfig (admin), .dev/herald-dev.pid, .dev/herald-dev.log, .dev/cluster/logs/,
# .dev/logs/podrunner.log, .dev/node/pods/<ns>/<pod>/ (logs/, volumes/, <container>.pid).
#
# Environment: GO (go), HERALD_TOOLS (helm's folder, as the Makefile passes it),
# HERALD_DEV_NAMESPACE (the chart's namespace, herald-system), HERALD_DEV_TIMEOUT (seconds to wait
# for each step, 180).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
dev=$root/.dev
pidfile=$dev/herald-dev.pid
GO=${GO:-go}
ns=${HERALD_DEV_NAMESPACE:-herald-system}
timeout=${HERALD_DEV_TIMEOUT:-180}

log() { printf 'dev: %s\n' "$*" >&2; }

# running_pid prints the PID of a running herald-dev of this checkout.
running_pid() {
  local pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  grep -q herald-dev "/proc/$pid/cmdline" 2>/dev/null || [ ! -d /proc ] || return 1
  echo "$pid"
}

# kill_session kills what is left of herald-dev's session: dev.sh starts herald-dev with setsid,
# so the session holds only herald-dev, the control plane and the pods' processes. Only processes
# of this checkout's bin/ or of the control plane's binaries are touched (a session ID could have
# been reused).
kill_session() {
  local sid=$1 pid cmd
  [ -n "$sid" ] || return 0
  for pid in $(ps -eo pid=,sid= | awk -v s="$sid" '$2 == s { print $1 }'); do
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
    if [[ $cmd == "$root/bin/"* || $cmd == bin/herald* || $cmd == */control-plane/k8s-*/* ]]; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

# kill_pods kills pod processes whose PID files are left (only processes of this bin/herald).
kill_pods() {
  local f pid cmd
  for f in "$dev"/node/pods/*/*/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f" 2>/dev/null) || continue
    [ -n "$pid" ] || continue
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || continue
    if [[ $cmd == "$root/bin/herald "* ]]; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

# stop_dev stops herald-dev (it stops the pods and the control plane itself), then makes sure.
stop_dev() {
  local pid=$1 sid i
  sid=$(cat "$dev/herald-dev.sid" 2>/dev/null || true)
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 120); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "herald-dev did not stop in 60s; killing it"
  fi
  kill_session "$sid"
  kill_pods
  rm -f "$pidfile" "$dev/herald-dev.sid" "$dev/ready"
}

down() {
  local pid
  if ! pid=$(running_pid); then
    log "no herald-dev running"
    kill_session "$(cat "$dev/herald-dev.sid" 2>/dev/null || true)"
    kill_pods
    rm -f "$pidfile" "$dev/herald-dev.sid" "$dev/ready"
    return 0
  fi
  log "stopping herald-dev (pid $pid)"
  stop_dev "$pid"
  log "stopped"
}

# diagnose shows why something is not ready: the pods, and the end of each pod's current log.
diagnose() {
  local f
  log "pods:"
  "$kubectl" get pods -A -o wide >&2 || true
  for f in "$dev"/node/pods/*/*/logs/*/*.log; do
    [ -f "$f" ] || continue
    log "end of ${f#"$root"/}:"
    tail -5 "$f" | cut -c1-400 >&2
  done
}

up() {
  local pid
  if pid=$(running_pid); then
    log "already running (pid $pid); KUBECONFIG=.dev/kubeconfig. Stop it with: make dev-down"
    exit 1
  fi
  command -v setsid >/dev/null || { log "setsid (util-linux) is needed"; exit 1; }

  log "building the control plane (cached after the first time; the first build takes several minutes)"
  local assets helm
  assets=$(hack/build-control-plane.sh)
  kubectl=$assets/kubectl
  log "building helm (cached)"
  helm=$(hack/tools.sh helm)/helm
  log "building bin/herald and bin/herald-dev"
  mkdir -p bin
  $GO build -o bin/herald .
  $GO build -o bin/herald-dev ./test/cluster/cmd/herald-dev

  mkdir -p "$dev"
  rm -f "$dev/ready"
  setsid bin/herald-dev --dir "$dev" --herald-binary bin/herald --assets "$assets" \
    >"$dev/herald-dev.log" 2>&1 </dev/null &
  pid=$!
  # setsid made herald-dev a session leader: its session holds only what it starts. Recorded
  # (and later killed as a whole) only when that is so.
  sleep 0.2
  if [ "$(ps -o sid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$pid" ]; then
    echo "$pid" >"$dev/herald-dev.sid"
  fi
  stopping=0
  # Ctrl-C, SIGTERM, or any failure below: stop everything.
  trap 'stopping=1; trap - INT TERM; log "stopping"; stop_dev '"$pid"'; log "stopped"; exit 130' INT TERM
  trap 'if [ $stopping = 0 ]; then stop_dev '"$pid"'; fi' EXIT

  local i
  for i in $(seq "$timeout"); do
    [ -f "$dev/ready" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      log "herald-dev exited:"; tail -20 "$dev/herald-dev.log" >&2; exit 1
    fi
    sleep 1
  done
  [ -f "$dev/ready" ] || { log "the cluster did not come up in ${timeout}s:"; tail -20 "$dev/herald-dev.log" >&2; exit 1; }
  export KUBECONFIG=$dev/kubeconfig
  log "cluster up: $(cat "$dev/ready")"

  log "installing charts/herald into namespace $ns"
  # The chart names the leader election's namespace itself (the operator runs as a process here,
  # without the service account's namespace file).
  if ! "$helm" upgrade --install herald charts/herald --namespace "$ns" --create-namespace \
    --wait --timeout "${timeout}s" >/dev/null; then
    log "the chart's operator did not become ready"
    diagnose
    exit 1
  fi
  log "applying config/samples (and the push sample's receiver, orders-consumer: herald sink)"
  "$kubectl" apply -k config/samples >/dev/null
  "$kubectl" apply -f config/samples/orders-consumer.yaml >/dev/null

  log "waiting for the BrokerCluster's broker pod"
  local sel=app.kubernetes.io/name=herald,app.kubernetes.io/instance=demo
  for i in $(seq "$timeout"); do
    [ -n "$("$kubectl" get pods -l "$sel" -o name 2>/dev/null)" ] && break
    sleep 1
  done
  if ! "$kubectl" wait pod -l "$sel" --for=condition=Ready --timeout="${timeout}s" >/dev/null; then
    log "the broker pod did not become ready"
    diagnose
    exit 1
  fi
  local ip
  ip=$("$kubectl" get pod demo-0 -o jsonpath='{.status.podIP}')
  # The sample Topic: the operator creates it on the broker; without a Topic controller (older
  # operators), the CLI does.
  if ! "$kubectl" wait topics.herald.dev/orders --for=condition=Ready --timeout=60s >/dev/null 2>&1; then
    log "Topic orders is not Ready; creating the topic on the broker with the CLI"
    bin/herald topics create orders --partitions 3 --server "http://$ip:8080" >/dev/null
  fi
  # The push Subscription starts at the latest message and its receiver must be up: wait for
  # both before publishing (without a Subscription controller, nothing is pushed).
  "$kubectl" wait subscriptions.herald.dev --all --for=condition=Ready --timeout=60s >/dev/null 2>&1 ||
    log "the Subscriptions are not Ready yet (kubectl get subscriptions says why)"
  "$kubectl" wait pod -l app.kubernetes.io/name=orders-consumer --for=condition=Ready --timeout="${timeout}s" >/dev/null ||
    log "orders-consumer (herald sink) is not Ready"
  local n
  for n in 1 2 3; do
    bin/herald publish orders "hello $n from make dev" --key "demo-$n" --server "http://$ip:8080" >/dev/null
  done
  log "published 3 messages to topic orders on demo-0 ($ip)"

  # Delivered: the push Subscription orders-webhook POSTs them to orders-consumer (herald sink),
  # which logs a line per push (kubectl logs goes through the pod runner's log endpoint).
  log "waiting for orders-consumer (herald sink) to receive them"
  local sinkip got=0
  sinkip=$("$kubectl" get pod -l app.kubernetes.io/name=orders-consumer -o jsonpath='{.items[0].status.podIP}' 2>/dev/null || true)
  for i in $(seq 60); do
    got=$(curl -fsS "http://$sinkip:8080/stats" 2>/dev/null | sed -n 's/.*"unique": *\([0-9]*\).*/\1/p' | head -1 || true)
    [ "${got:-0}" -ge 3 ] && break
    sleep 1
  done
  if [ "${got:-0}" -ge 3 ]; then
    log "delivered: orders-consumer received $got messages; its log (kubectl logs deploy/orders-consumer):"
  else
    log "orders-consumer has not received the 3 messages yet (got ${got:-0}); kubectl get subscriptions shows why. Its log:"
  fi
  "$kubectl" logs deploy/orders-consumer --tail=5 2>&1 | sed 's/^/  /' >&2 || true

  cat <<EOF

Herald's local cluster is up (control plane + pod runner; pods are local processes on 127.x).

  export KUBECONFIG=$dev/kubeconfig
  alias kubectl=$kubectl   # or any kubectl
  kubectl get herald
  kubectl get pods -A -o wide
  kubectl logs -n $ns deploy/herald
  kubectl logs deploy/orders-consumer                  # the push receiver (herald sink): a line per push
  curl http://$sinkip:8080/stats                       # its counts
  bin/herald topics list --server http://$ip:8080      # demo-0's pod IP
  bin/herald publish orders hi --server http://$ip:8080

Herald objects (kubectl get herald):
$("$kubectl" get herald 2>&1)

Pods:
$("$kubectl" get pods -A -o custom-columns='NAMESPACE:.metadata.namespace,NAME:.metadata.name,IP:.status.podIP,READY:.status.containerStatuses[0].ready')

Logs: .dev/herald-dev.log, .dev/cluster/logs/, .dev/logs/podrunner.log, .dev/node/pods/<ns>/<pod>/logs/
Kill a broker (a crash): kill -9 \$(cat .dev/node/pods/default/demo-0/broker.pid)
Stop: Ctrl-C here, or make dev-down.
EOF
  # Stay up until herald-dev ends (make dev-down) or a signal.
  while kill -0 "$pid" 2>/dev/null; do
    wait "$pid" 2>/dev/null || true
  done
  stopping=1
  stop_dev "$pid" # whatever a crashed herald-dev left behind
  log "herald-dev stopped"
}

case ${1:-up} in
  up) up ;;
  down) down ;;
  *) echo "usage: hack/dev.sh [up|down]" >&2; exit 2 ;;
esac
