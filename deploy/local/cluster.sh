#!/usr/bin/env bash
# Runs a local 3-node memdbd cluster on loopback, data under ./data.
#
#   node  client (gRPC)     raft              admin (HTTP)
#   n1    127.0.0.1:7001    127.0.0.1:7101    127.0.0.1:7201
#   n2    127.0.0.1:7002    127.0.0.1:7102    127.0.0.1:7202
#   n3    127.0.0.1:7003    127.0.0.1:7103    127.0.0.1:7203
#
# Logs are prefixed with the node id. Ctrl-C stops all three cleanly;
# running it again restarts them on their data.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${MEMDBD_BIN:-./bin/memdbd}
DATA=${MEMDBD_DATA:-./data}
[ -x "$BIN" ] || { echo "build first: make build" >&2; exit 1; }

INITIAL="n1=127.0.0.1:7101,n2=127.0.0.1:7102,n3=127.0.0.1:7103"
pids=()
stop() {
  trap - INT TERM
  echo "stopping cluster..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait
  echo "cluster stopped"
}
trap stop INT TERM

for i in 1 2 3; do
  mkdir -p "$DATA/n$i"
  "$BIN" --node-id "n$i" --data-dir "$DATA/n$i" \
    --client-addr "127.0.0.1:700$i" --raft-addr "127.0.0.1:710$i" --admin-addr "127.0.0.1:720$i" \
    --initial-cluster "$INITIAL" 2>&1 | sed -u "s/^/[n$i] /" &
  pids+=($!)
done
echo "memdbd cluster up: clients connect to 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 (Ctrl-C to stop)"
wait
