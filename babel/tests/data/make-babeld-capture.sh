#!/usr/bin/env bash
# Regenerates babeld-1.12.pcap (+ .out, tcpdump -vv's decode): two network
# namespaces joined by a veth pair, babeld on both ends, ~15 s of traffic.
# Side a: type tunnel (RTT timestamps in Hellos and IHUs), an IPv6 /128, an
# IPv4 /32 announced over IPv6 (AE 4, the veth has no IPv4 address) and a
# source-specific route (mandatory sub-TLV 128). Side b: unicast true.
# Needs root, babeld and tcpdump. Usage: make-babeld-capture.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-15}
a=wirecap-a b=wirecap-b tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    ip netns del $a 2>/dev/null || true
    ip netns del $b 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
ip netns add $a
ip netns add $b
ip link add va netns $a type veth peer name vb netns $b
for ns in $a $b; do ip -n $ns link set lo up; done
ip -n $a link set va up
ip -n $b link set vb up
ip -n $a -6 addr add fd00:77:a::1/128 dev lo
ip -n $a addr add 198.18.77.1/32 dev lo
ip -n $b -6 addr add fd00:77:b::1/128 dev lo
ip -n $a -6 route add unreachable fd00:77:5::/48 from fd00:77:a::/48 proto static 2>/dev/null || true
sleep 2 # link-local addresses (DAD)
cat >"$tmp/a.conf" <<CONF
interface va type tunnel hello-interval 1
redistribute local ip fd00:77::/32 le 128
redistribute local ip 198.18.77.0/24 le 32
redistribute ip fd00:77:5::/48 src-ip fd00:77:a::/48
redistribute local deny
CONF
cat >"$tmp/b.conf" <<CONF
interface vb unicast true hello-interval 1 enable-timestamps true
redistribute local ip fd00:77::/32 le 128
redistribute local deny
CONF
ip netns exec $a tcpdump -i va -w "$tmp/cap.pcap" -U udp port 6696 2>/dev/null &
pids+=($!)
sleep 1
ip netns exec $a babeld -I "$tmp/a.pid" -S "$tmp/a.state" -c "$tmp/a.conf" -d 0 va &
pids+=($!)
ip netns exec $b babeld -I "$tmp/b.pid" -S "$tmp/b.state" -c "$tmp/b.conf" -d 0 vb &
pids+=($!)
sleep "$secs"
kill "${pids[1]}" "${pids[2]}" # babeld retracts its routes on exit
sleep 1
kill "${pids[0]}"
wait "${pids[0]}" 2>/dev/null || true
cp "$tmp/cap.pcap" babeld-1.12.pcap
tcpdump -# -tttt -vv -n -r babeld-1.12.pcap >babeld-1.12.out 2>/dev/null
echo "wrote $(tcpdump -r babeld-1.12.pcap 2>/dev/null | wc -l) packets"
