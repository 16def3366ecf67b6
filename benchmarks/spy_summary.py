"""Summarize a py-spy raw (collapsed) profile of the xDS server into cost buckets.

    python -m benchmarks.spy_summary PROFILE [--top 25]

`python -m benchmarks.xds_fanout ... --py-spy PROFILE` writes such a profile (native and
Python frames, every thread) for the server's update phase. Each main-thread sample is put
in one bucket, from the leaf up:

- gc: CPython's cyclic garbage collector, wherever it was triggered;
- syscall: the sample sits in a socket/poll system call (e.g. grpc's sendmsg);
- protobuf: upb decoding requests or converting their fields to Python objects;
- grpc: grpc's Cython layer and C core (cygrpc);
- kontinuum: Python code of kontinuum itself;
- asyncio: the event loop, tasks, futures, events;
- other: the rest (the benchmark's own hook, interpreter internals).

The kontinuum bucket and the protobuf/gc buckets are also broken down by the innermost
kontinuum function on the stack, which tells which of our functions caused the cost.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

SYSCALLS = ("sendmsg", "recvmsg", "recv", "send", "write", "read", "epoll_wait", "writev")
_ADDRESS = re.compile(r"0x[0-9a-f]+ ")


def bucket(frames: list[str]) -> str:
    if any("gc_collect_main" in f for f in frames):
        return "gc"
    leaf = frames[-1].split(" ", 1)[0]
    if leaf in SYSCALLS:
        return "idle (epoll_wait)" if leaf == "epoll_wait" else f"syscall {leaf}"
    for frame in reversed(frames):
        if "_message.abi3.so" in frame or "upb" in frame.lower():
            return "protobuf (upb)"
        if "cygrpc" in frame or "grpc/" in frame:
            return "grpc (Cython + C core)"
        if "kontinuum/" in frame:
            return "kontinuum (Python)"
        if "asyncio/" in frame or "_asynciomodule" in frame:
            return "asyncio"
        if "benchmarks/" in frame:
            return "benchmark hook"
    return "other"


def innermost(frames: list[str], marker: str) -> str | None:
    for frame in reversed(frames):
        if marker in frame:
            return _ADDRESS.sub("", frame).split(" (")[0] + " (" + frame.split("(")[-1]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.spy_summary")
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)

    buckets: collections.Counter[str] = collections.Counter()
    by_function: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    with open(args.profile) as lines:
        for line in lines:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            n = int(count)
            frames = stack.split(";")
            thread = frames[0]
            threads[thread] += n
            if "MainThread" not in thread:
                continue
            b = bucket(frames)
            if b.startswith("idle"):
                continue
            total += n
            buckets[b] += n
            owner = innermost(frames, "kontinuum/")
            if owner is not None:
                by_function[f"{owner} [{b}]"] += n
    print("samples per thread:")
    for thread, n in threads.most_common():
        print(f"  {n:7d}  {thread[:100]}")
    print(f"\nmain thread, busy samples: {total}")
    for name, n in buckets.most_common():
        print(f"  {100.0 * n / total:5.1f}%  {name}")
    print("\nby innermost kontinuum function (share of busy main-thread samples):")
    for name, n in by_function.most_common(args.top):
        print(f"  {100.0 * n / total:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
