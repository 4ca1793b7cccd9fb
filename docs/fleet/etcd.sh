#!/bin/sh
# Three etcd members on loopback, for the demo in docs/fleet.md (not for production: a real
# fleet runs its members on separate machines in two or three core sites).
#   sh docs/fleet/etcd.sh start [N...]  start members (all three by default; data and logs
#                                        in ./etcd-demo/; a member started before keeps its data)
#   sh docs/fleet/etcd.sh kill N        kill member N (1, 2 or 3) at once, as a crash would
#   sh docs/fleet/etcd.sh status        each member: leader or not, revision
#   sh docs/fleet/etcd.sh stop          stop them all
# ETCD_DEMO_HOST=10.99.0.1 also listens there (the split-view part of the demo).
set -eu
dir=${ETCD_DEMO_DIR:-./etcd-demo}
cluster=m1=http://127.0.0.1:2380,m2=http://127.0.0.1:22380,m3=http://127.0.0.1:32380
endpoints=127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
client() { case $1 in 1) echo 2379;; 2) echo 22379;; 3) echo 32379;; *) exit 2;; esac; }

start() {
    mkdir -p "$dir"
    for n in "$@"; do
        c=$(client "$n"); p=$((c + 1))
        state=new; [ -d "$dir/m$n.etcd" ] && state=existing
        urls=http://127.0.0.1:$c${ETCD_DEMO_HOST:+,http://$ETCD_DEMO_HOST:$c}
        etcd --name "m$n" --data-dir "$dir/m$n.etcd" \
            --listen-client-urls "$urls" --advertise-client-urls "http://127.0.0.1:$c" \
            --listen-peer-urls "http://127.0.0.1:$p" --initial-advertise-peer-urls "http://127.0.0.1:$p" \
            --initial-cluster "$cluster" --initial-cluster-state "$state" \
            --initial-cluster-token geodns-demo >>"$dir/m$n.log" 2>&1 &
        echo $! >"$dir/m$n.pid"
    done
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
    start) if [ $# -eq 0 ]; then set -- 1 2 3; fi; start "$@" ;;
    kill) kill -9 "$(cat "$dir/m$1.pid")" ;;
    status) ETCDCTL_API=3 etcdctl --endpoints=$endpoints endpoint status -w table ;;
    stop) for n in 1 2 3; do
              if [ -f "$dir/m$n.pid" ]; then kill "$(cat "$dir/m$n.pid")" 2>/dev/null || true; fi
          done ;;
    *) echo "usage: $0 start [N...]|kill N|status|stop" >&2; exit 2 ;;
esac
