"""Profiles of the benchmark cases, for finding where the time goes.

    python bench/profiles.py --size 10000                  # every case
    python bench/profiles.py --size 10000 --cases load,edit

In-process cases (load = the cold start's first refresh(), rescan, edit, build
= create_app + export.build_site) run under pyinstrument (a low-overhead
sampling call tree) and then cProfile (exact call counts, ~2x overhead);
memory lists what a loaded publisher keeps, by allocation site (tracemalloc);
the HTTP cases (get = 200 gzip, 304) sample a 2-worker gunicorn with py-spy
while wrk loads it. Everything is written to bench/results/profile-<case>-<n>.txt;
a summary is printed.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import corpus
import run
from pyinstrument import Profiler

TOP = 18


def sampled(action: Callable[[], object], interval: float = 0.0005) -> str:
    """pyinstrument's call tree of ``action``, application code only."""
    profiler = Profiler(interval=interval)
    profiler.start()
    action()
    profiler.stop()
    return profiler.output_text(unicode=True, color=False, show_all=False)


def counted(action: Callable[[], object]) -> str:
    """cProfile's flat list, by own time and by cumulative time."""
    profile = cProfile.Profile()
    profile.runcall(action)
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out).strip_dirs()
    stats.sort_stats("tottime").print_stats(TOP)
    stats.sort_stats("cumulative").print_stats(TOP)
    return out.getvalue()


def memory(articles: Path) -> str:
    """What a loaded publisher holds, by allocation site (tracemalloc), largest first."""
    with tempfile.TemporaryDirectory() as tmp:
        tracemalloc.start(1)
        publisher = run.load_publisher(articles, Path(tmp) / "ledger.sqlite3")
        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        stats = snapshot.statistics("lineno")
        total = sum(stat.size for stat in stats)
        disk = run.walk(articles, run.stat_size)
        lines = [f"{total / 1e6:.1f} MB held after load; corpus {disk / 1e6:.1f} MB on disk"]
        for stat in stats[:TOP]:
            frame = stat.traceback[0]
            lines.append(f"{stat.size / 1e6:8.1f} MB {stat.count:9,} blocks  "
                         f"{Path(frame.filename).name}:{frame.lineno}")
        publisher.close()
        return "\n".join(lines)


def build(articles: Path, tmp: Path) -> object:
    """create_app + export.build_site, as the build case runs it."""
    from feedsvc import create_app
    from feedsvc.export import build_site

    ledger = tmp / f"ledger-{time.monotonic_ns()}.sqlite3"
    app = create_app({"articles_dir": str(articles), "ledger_path": str(ledger),
                      "base_url": run.BASE_URL, "reload_interval": 0})
    return build_site(app, tmp / f"out-{time.monotonic_ns()}")


def in_process(case: str, articles: Path, n: int) -> str:
    """Profile ``case`` (load, rescan, edit, build) on a fresh publisher over ``articles``."""
    with tempfile.TemporaryDirectory() as tmp:
        if case == "build":

            def action() -> object:
                return build(articles, Path(tmp))

        elif case == "load":
            ledgers = iter([Path(tmp) / "a.sqlite3", Path(tmp) / "b.sqlite3"])

            def action() -> object:  # a fresh, empty ledger each time
                return run.load_publisher(articles, next(ledgers))

        else:
            publisher = run.load_publisher(articles, Path(tmp) / "ledger.sqlite3")

            def action() -> object:
                if case == "rescan":
                    return [publisher.refresh() for _ in range(20)]
                return run.edit(publisher, articles, n, 10)

            action()  # warm: every affected feed cached once
        return "\n".join(f"== {name}\n" + tool(action) for name, tool in
                         (("pyinstrument", sampled), ("cProfile", counted)))


def collapsed(path: Path) -> str:
    """Self and inclusive sample shares by function from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f.rsplit(":", 1)[0] if f.count(":") > 1 else f for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread")]
        total += int(count)
        if frames:
            own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    lines = [f"{total} samples", "-- self (leaf) share"]
    lines += [f"{c / total:6.1%}  {f}" for f, c in own.most_common(TOP)]
    lines += ["-- inclusive share"]
    lines += [f"{c / total:6.1%}  {f}" for f, c in inclusive.most_common(TOP + 12)]
    return "\n".join(lines)


def http(case: str, articles: Path, seconds: float = 8) -> str:
    """py-spy on both workers while wrk loads /feed.atom (200 gzip, or 304)."""
    gz = {"Accept-Encoding": "gzip"}
    with tempfile.TemporaryDirectory() as tmp:
        env = run.feedsvc_env(articles, run.filled_ledger(articles, tmp), 0)
        with run.gunicorn("wsgi:app", 2, env) as server:
            first = run.get(server, "/feed.atom", gz)
            headers = gz if case == "get" else {**gz, "If-None-Match": first.headers["ETag"]}
            url = server.url + "/feed.atom"
            run.wrk(url, 2, 32, headers)  # warm both workers
            outs = [Path(tmp) / f"{pid}.txt" for pid in server.workers()]
            loader = threading.Thread(target=run.wrk, args=(url, seconds + 2, 32, headers))
            loader.start()
            time.sleep(0.5)
            spies = [
                subprocess.Popen(["py-spy", "record", "--pid", str(pid), "-d", str(seconds),
                                  "-r", "250", "-f", "raw", "-o", str(out), "--nonblocking"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for pid, out in zip(server.workers(), outs, strict=True)
            ]
            for spy in spies:
                spy.wait()
            loader.join()
            merged = Path(tmp) / "merged.txt"
            merged.write_text("".join(out.read_text() for out in outs if out.exists()))
            return collapsed(merged)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--cases", default="load,rescan,edit,build,memory,get,304")
    args = parser.parse_args()
    articles = corpus.generate(args.size, run.BENCH / f"corpus-{args.size}")
    run.RESULTS.mkdir(exist_ok=True)
    for case in args.cases.split(","):
        started = time.perf_counter()
        if case in ("get", "304"):
            text = http(case, articles)
        elif case == "memory":
            text = memory(articles)
        else:
            text = in_process(case, articles, args.size)
        out = run.RESULTS / f"profile-{case}-{args.size}.txt"
        out.write_text(text)
        print(f"== {case} ({time.perf_counter() - started:.0f} s) -> {out}")
        print(text[:6000] if case not in ("get", "304") else text, flush=True)


if __name__ == "__main__":
    sys.exit(main())
