#!/usr/bin/env python3
"""Per-stage latency of a packet through re6st nodes, from the traces of
`re6st bench --perf DIR` (perf syscall and scheduler events of the two
nodes of the two-node overlay while pings cross it).

    benches/stages.py DIR            # reads DIR/idle.data and DIR/load.data

A packet's way, as the kernel sees the nodes' syscalls (node a sends, b
receives, then b's kernel answers and the reply goes back):

    a: TUN read returns  ->  a: UDP sendmsg enters          "node out"
    a: UDP sendmsg enters ->  b: UDP recvmsg returns         "wire" (kernel, veth, b's wake-up)
    b: UDP recvmsg returns -> b: TUN write enters           "node in"
    b: TUN write enters  ->  b: TUN read returns            "kernel echo" (ping reply, b's wake-up)

For every traversal of a node (out or in) it also counts what happened
in that node meanwhile: threads that ran, futex calls (task hand-offs
between threads), epoll waits that returned, and the CPU time its threads
spent running. Wall time minus CPU time is time spent waiting for a
thread to be woken and scheduled: the cost of the hand-offs.
"""

import bisect
import collections
import os
import re
import statistics
import subprocess
import sys

READ, WRITE, READV, WRITEV = 0, 1, 19, 20
SENDMSG, RECVMSG, SENDMMSG, RECVMMSG = 46, 47, 307, 299
FUTEX, EPOLL_WAIT, EPOLL_PWAIT, EPOLL_PWAIT2 = 202, 232, 281, 441

LINE = re.compile(
    r"^\s*(?P<comm>.+?)\s+(?P<pid>\d+)/(?P<tid>\d+)\s+\[\d+\]\s+(?P<time>[\d.]+):\s+"
    r"(?P<event>[\w:]+):\s*(?P<rest>.*)$"
)
ENTER = re.compile(r"NR (\d+) \(([0-9a-f]+)")
EXIT = re.compile(r"NR (\d+) = (-?\d+)")
SWITCH = re.compile(r"prev_pid=(\d+) .*==> .*next_pid=(\d+)")


def fds(path):
    """TUN descriptors of a node (links to /dev/net/tun)."""
    tun = set()
    with open(path) as f:
        for line in f:
            fd, target = line.split(maxsplit=1)
            if "net/tun" in target:
                tun.add(int(fd))
    return tun


def events(data):
    out = subprocess.run(
        ["perf", "script", "-i", data, "-F", "comm,pid,tid,cpu,time,event,trace"],
        capture_output=True, text=True, check=True,
    ).stdout
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            yield (float(m["time"]), int(m["pid"]), int(m["tid"]), m["event"], m["rest"])


def load(dirname, name):
    tun = {}
    for node in ("a", "b"):
        tun[node] = fds(os.path.join(dirname, f"fd-{node}.txt"))
    syscalls = []  # (node_pid, tid, nr, fd, ret, t_enter, t_exit)
    pending = {}
    switches = collections.defaultdict(list)  # tid -> [(t, 'out'|'seen')]
    for t, pid, tid, ev, rest in events(os.path.join(dirname, name)):
        if ev == "raw_syscalls:sys_enter":
            m = ENTER.search(rest)
            if m:
                pending[tid] = (int(m[1]), int(m[2], 16), t)
            switches[tid].append((t, "seen"))
        elif ev == "raw_syscalls:sys_exit":
            m = EXIT.search(rest)
            p = pending.pop(tid, None)
            if m and p and p[0] == int(m[1]):
                syscalls.append((pid, tid, p[0], p[1], int(m[2]), p[2], t))
            switches[tid].append((t, "seen"))
        elif ev == "sched:sched_switch":
            m = SWITCH.search(rest)
            if m and int(m[1]) == tid:
                switches[tid].append((t, "out"))
    return syscalls, switches, tun


def running(switches, tid, t0, t1):
    """CPU time of thread `tid` inside [t0, t1]: from the first event seen
    after a switch-out until the next switch-out."""
    total, start = 0.0, None
    for t, kind in switches.get(tid, ()):
        if kind == "seen" and start is None:
            start = t
        elif kind == "out" and start is not None:
            a, b = max(start, t0), min(t, t1)
            if b > a:
                total += b - a
            start = None
    if start is not None:
        a, b = max(start, t0), t1
        if b > a:
            total += b - a
    return total


def analyse(dirname, name, pids):
    syscalls, switches, tun = load(dirname, name)
    node_of = {pids[0]: "a", pids[1]: "b"}
    kinds = collections.defaultdict(list)  # (node, kind) -> [t]
    by_node = collections.defaultdict(list)
    for pid, tid, nr, fd, ret, te, tx in syscalls:
        node = node_of.get(pid)
        if node is None:
            continue
        by_node[node].append((pid, tid, nr, fd, ret, te, tx))
        if nr in (READ, READV) and fd in tun[node] and ret > 0:
            kinds[(node, "tun_read")].append(tx)
        elif nr in (WRITE, WRITEV) and fd in tun[node]:
            kinds[(node, "tun_write")].append(te)
        elif nr in (SENDMSG, SENDMMSG):
            kinds[(node, "udp_send")].append(te)
        elif nr in (RECVMSG, RECVMMSG) and ret > 0:
            kinds[(node, "udp_recv")].append(tx)
    for v in kinds.values():
        v.sort()

    def after(ts, t, limit=0.005):
        i = bisect.bisect_right(ts, t)
        return ts[i] if i < len(ts) and ts[i] - t < limit else None

    def before(ts, t, limit=0.005):
        i = bisect.bisect_left(ts, t)
        return ts[i - 1] if i > 0 and t - ts[i - 1] < limit else None

    def inside(node, t0, t1):
        threads, futex, epoll, cpu = set(), 0, 0, 0.0
        for pid, tid, nr, fd, ret, te, tx in by_node[node]:
            if te > t1 or tx < t0:
                continue
            threads.add(tid)
            futex += nr == FUTEX and t0 <= te <= t1
            epoll += nr in (EPOLL_WAIT, EPOLL_PWAIT, EPOLL_PWAIT2) and t0 <= tx <= t1
        for tid in threads:
            cpu += running(switches, tid, t0, t1)
        return len(threads), futex, epoll, cpu

    stages = collections.defaultdict(list)
    for node in ("a", "b"):
        for t0 in kinds[(node, "tun_read")]:
            t1 = after(kinds[(node, "udp_send")], t0)
            if t1 is not None:
                stages[f"node {node} out: TUN read -> UDP send"].append((t1 - t0, inside(node, t0, t1)))
        for t1 in kinds[(node, "tun_write")]:
            t0 = before(kinds[(node, "udp_recv")], t1)
            if t0 is not None:
                stages[f"node {node} in: UDP recv -> TUN write"].append((t1 - t0, inside(node, t0, t1)))
    for src, dst in (("a", "b"), ("b", "a")):
        for t0 in kinds[(src, "udp_send")]:
            t1 = after(kinds[(dst, "udp_recv")], t0, 0.002)
            if t1 is not None:
                stages[f"wire {src} -> {dst}: UDP send -> UDP recv"].append((t1 - t0, None))
    for node in ("a", "b"):
        for t0 in kinds[(node, "tun_write")]:
            t1 = after(kinds[(node, "tun_read")], t0, 0.002)
            if t1 is not None:
                stages[f"kernel {node}: TUN write -> TUN read"].append((t1 - t0, None))
    return stages


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    d = sys.argv[1]
    pids = [int(x) for x in open(os.path.join(d, "pids.txt")).read().split()]
    for name in ("idle.data", "load.data"):
        path = os.path.join(d, name)
        if not os.path.exists(path):
            continue
        stages = analyse(d, name, pids)
        print(f"\n{name}: median (p10-p90) in microseconds, n traversals")
        print(f"{'stage':44} {'wall us':>22} {'cpu us':>8} {'threads':>7} {'futex':>5} {'epoll':>5} {'n':>6}")
        for stage in sorted(stages):
            v = stages[stage]
            walls = sorted(w * 1e6 for w, _ in v)
            q = statistics.quantiles(walls, n=10) if len(walls) >= 2 else [walls[0]] * 9
            row = f"{stage:44} {statistics.median(walls):9.1f} ({q[0]:5.1f}-{q[8]:6.1f})"
            inner = [x for _, x in v if x is not None]
            if inner:
                row += " {:8.1f} {:7.1f} {:5.1f} {:5.1f}".format(
                    statistics.median(x[3] * 1e6 for x in inner),
                    statistics.median(x[0] for x in inner),
                    statistics.median(x[1] for x in inner),
                    statistics.median(x[2] for x in inner),
                )
            else:
                row += " " * 29
            print(f"{row} {len(v):6d}")


if __name__ == "__main__":
    main()
