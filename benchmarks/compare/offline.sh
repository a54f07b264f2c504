#!/bin/sh
# Run a command with no network but loopback, to check that nothing it starts reaches outside
# (no model download, no telemetry): `unshare -n benchmarks/compare/offline.sh CMD...` as root.
# Inside the fresh namespace: loopback up, plus a veth pair that leads nowhere but itself,
# because WebRTC gathers no ICE candidates at all when loopback is the only adapter.
set -e
ip link set lo up
ip link add bench0 type veth peer name bench1
ip addr add 10.251.0.1/24 dev bench0
ip addr add 10.251.0.2/24 dev bench1
ip link set bench0 up
ip link set bench1 up
exec "$@"
