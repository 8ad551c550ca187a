#!/usr/bin/env bash
# Regenerates lo-ethernet.pcap, any-sll.pcap and any-sll2.pcap: the same two
# Babel packets (taken from babeld-1.12.pcap), sent over loopback inside a
# private network namespace, once over IPv6 and once over IPv4 (UDP 6696),
# captured with the link types tcpdump picks for `-i lo` (Ethernet) and
# `-i any` (Linux cooked v2, and v1 with -y LINUX_SLL). Needs root,
# tcpdump and python3.
set -euo pipefail
cd "$(dirname "$0")"
ns=wirecap-lo
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    ip netns del $ns 2>/dev/null || true
}
trap cleanup EXIT
ip netns add $ns
ip -n $ns link set lo up
sleep 1
ip netns exec $ns tcpdump -i lo -w lo-ethernet.pcap -U udp port 6696 2>/dev/null &
pids+=($!)
ip netns exec $ns tcpdump -i any -w any-sll2.pcap -U udp port 6696 2>/dev/null &
pids+=($!)
ip netns exec $ns tcpdump -i any -y LINUX_SLL -w any-sll.pcap -U udp port 6696 2>/dev/null &
pids+=($!)
sleep 2
ip netns exec $ns python3 - <<'PY'
import socket
# Hello with a timestamp, and Router-Id + Update fd00:77:b::1/128 (from babeld 1.12).
hello = bytes([42, 2, 0, 14, 4, 12, 0, 0, 0x0a, 0x0a, 0, 100, 3, 4, 0xca, 0x1f, 0xa8, 0x2d])
update = bytes([42, 2, 0, 40, 6, 10, 0, 0, 0x18, 0x08, 0xe5, 0xc2, 0x59, 0xeb, 0xfd, 0x51,
                8, 26, 2, 0x80, 128, 0, 1, 144, 9, 236, 0, 0,
                0xfd, 0, 0, 0x77, 0, 0xb, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
for fam, dst in ((socket.AF_INET6, "::1"), (socket.AF_INET, "127.0.0.1")):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((dst, 6696))
    s.sendto(hello, (dst, 6696))
    s.sendto(update, (dst, 6696))
PY
sleep 2
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
sleep 1
for f in lo-ethernet.pcap any-sll2.pcap any-sll.pcap; do
    echo "$f: $(tcpdump -r $f 2>/dev/null | wc -l) packets"
done
