#!/bin/sh
# A split view on one machine, for the demo in docs/fleet.md (needs root): node-c runs in a
# network namespace of its own, so it alone can lose its way to a PoP's health endpoint.
#   sh docs/fleet/netns.sh up      namespace geodns-c (10.99.0.2, via 10.99.0.1), and the
#                                  PoPs' health addresses 10.99.1.11 (fra), 10.99.1.12 (iad)
#   sh docs/fleet/netns.sh cut     node-c can no longer reach fra's health endpoint
#   sh docs/fleet/netns.sh heal    it can again
#   sh docs/fleet/netns.sh down    remove all of it
# Nothing leaves the machine: the namespace has a veth pair to this host and nothing else.
set -eu
ns=geodns-c
case ${1:-} in
    up)
        ip netns add $ns
        ip link add gdc0 type veth peer name gdc1 netns $ns
        ip addr add 10.99.0.1/30 dev gdc0
        ip link set gdc0 up
        ip -n $ns addr add 10.99.0.2/30 dev gdc1
        ip -n $ns link set gdc1 up
        ip -n $ns link set lo up
        ip -n $ns route add default via 10.99.0.1
        ip addr add 10.99.1.11/32 dev lo
        ip addr add 10.99.1.12/32 dev lo ;;
    cut) ip -n $ns route add blackhole 10.99.1.11/32 ;;
    heal) ip -n $ns route del blackhole 10.99.1.11/32 ;;
    down)
        ip netns del $ns 2>/dev/null || true
        ip addr del 10.99.1.11/32 dev lo 2>/dev/null || true
        ip addr del 10.99.1.12/32 dev lo 2>/dev/null || true ;;
    *) echo "usage: $0 up|cut|heal|down" >&2; exit 2 ;;
esac
