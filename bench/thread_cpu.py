"""CPU used by each thread of a running process (and optionally another process), in cores.

Reads ``/proc/PID/task/*/stat`` twice, ``--seconds`` apart (Linux only). Used to see
how a worker splits its time between the event-loop thread, the step thread and XLA's
threads during a drain of ``bench/bench_serving.py``:

    .venv/bin/python bench/thread_cpu.py --pid $(pgrep -f "stream_app.cli worker" | head -1) \
        --also $(pgrep -f kafka.Kafka | head -1) --seconds 20
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def thread_ticks(pid: int) -> dict[str, tuple[str, int]]:
    """Thread id -> (name, user + system clock ticks so far)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        out[task.name] = (name, int(fields[11]) + int(fields[12]))
    return out


def process_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--also", type=int, help="another process to total (the broker)")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    for pid in (args.pid, args.also):
        if pid is not None and not Path(f"/proc/{pid}/task").is_dir():
            parser.error(f"no process {pid}")
    before, also_before, started = thread_ticks(args.pid), 0, time.monotonic()
    if args.also:
        also_before = process_ticks(args.also)
    time.sleep(args.seconds)
    after, wall = thread_ticks(args.pid), time.monotonic() - started
    rows = sorted(
        (
            (ticks - before.get(tid, (name, 0))[1], tid, name)
            for tid, (name, ticks) in after.items()
        ),
        reverse=True,
    )
    total = sum(r[0] for r in rows)
    print(f"pid {args.pid}: {total / TICKS / wall:.2f} cores over {wall:.1f} s")
    if args.also:
        also = process_ticks(args.also) - also_before
        print(f"pid {args.also}: {also / TICKS / wall:.2f} cores")
    for ticks, tid, name in rows:
        if ticks:
            print(f"  {name:24s} {tid:>8s} {ticks / TICKS / wall:.2f} cores")


if __name__ == "__main__":
    main()
