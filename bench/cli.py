"""How long the everyday commands take, each run as a whole process, as a user runs them.

Times `quipfeed --help`, `stats`, `trending` and `ingest dead-letters` on an empty data dir,
`stats` and `search` (the embedding model cold: a fresh process every run) on a data dir
holding a few hundred posts of the bundled sample, and stopping the embedded Redis. Each is
run `--runs` times; min / median / max wall seconds, the median CPU seconds of the process
(user + system, which says how much of the wall time was the machine being busy elsewhere),
and the goal each should meet on a warm machine.

Run: `quipfeed bench cli [--runs 5] [--no-search] [--json]` or `python -m bench.cli …`.
Commands run with this checkout's code (`python -m quipfeed.cli` from the checkout's root).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The goals of issue #19, in seconds.
GOALS = {
    "--help": 0.5,
    "stats (empty)": 1.0,
    "trending (empty)": 1.0,
    "ingest dead-letters (empty)": 1.0,
    "stats (indexed)": 1.0,
    "search (model cold)": 3.0,
    "stop embedded redis": 0.3,
}
SEARCH = ["search", "what are people saying about the Met Gala", "--now", "2024-05-08T00:00:00Z"]
INDEXED_POSTS = 300


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUIPFEED_")}
    return {**env, "QUIPFEED_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}


def time_command(args: list[str], data_dir: Path, runs: int) -> dict[str, Any]:
    """Wall and CPU seconds of `quipfeed ARGS` as a fresh process, `runs` times."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "quipfeed.cli", *args],
            cwd=ROOT,
            env=_env(data_dir),
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
        )
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            raise RuntimeError(f"quipfeed {' '.join(args)} failed: {done.stderr[-2000:]}")
    return _row(walls, cpus)


def time_redis_stop(runs: int) -> dict[str, Any]:
    """`EmbeddedRedis.stop()` on a live server holding a key: SHUTDOWN SAVE until it is gone."""
    sys.path.insert(0, str(ROOT))
    from quipfeed.embedded_redis import EmbeddedRedis

    walls = []
    with tempfile.TemporaryDirectory(prefix="quipfeed-bench-cli-") as tmp:
        for i in range(runs):
            server = EmbeddedRedis(Path(tmp) / f"redis-{i}")
            server.ensure_running()
            started = time.perf_counter()
            server.stop()
            walls.append(time.perf_counter() - started)
    return _row(walls, None)


def _row(walls: list[float], cpus: list[float] | None) -> dict[str, Any]:
    return {
        "runs": len(walls),
        "min_s": round(min(walls), 3),
        "median_s": round(statistics.median(walls), 3),
        "max_s": round(max(walls), 3),
        "cpu_median_s": round(statistics.median(cpus), 3) if cpus else None,
    }


def index_sample(data_dir: Path, posts: int = INDEXED_POSTS) -> None:
    """The first `posts` posts of the bundled sample, embedded into the data dir's shard (in a
    process of its own, so this one never loads the model)."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from quipfeed.runtime import SAMPLE_FEED, embedder_for, open_store\n"
        "from quipfeed.settings import Settings\n"
        "from retrieval.post import Post\n"
        "settings = Settings(data_dir=Path(sys.argv[1]))\n"
        "lines = [l for l in SAMPLE_FEED.read_text().splitlines() if l.strip()]\n"
        "posts = [Post.model_validate_json(l) for l in lines[: int(sys.argv[2])]]\n"
        "embedder = embedder_for(settings)\n"
        "store = open_store(settings, embedder.dim)\n"
        "store.upsert(posts, embedder.embed([p.text for p in posts]).tolist())\n"
        "store.close()\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, str(data_dir), str(posts)],
        cwd=ROOT,
        env=_env(data_dir),
        check=True,
        timeout=900,
    )


def run(runs: int = 5, search: bool = True) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="quipfeed-bench-cli-") as tmp:
        empty, indexed = Path(tmp) / "empty", Path(tmp) / "indexed"
        rows["--help"] = time_command(["--help"], empty, runs)
        rows["stats (empty)"] = time_command(["stats"], empty, runs)
        rows["trending (empty)"] = time_command(["trending"], empty, runs)
        rows["ingest dead-letters (empty)"] = time_command(["ingest", "dead-letters"], empty, runs)
        if search:
            index_sample(indexed)
            rows["stats (indexed)"] = time_command(["stats"], indexed, runs)
            rows["search (model cold)"] = time_command(SEARCH, indexed, runs)
        rows["stop embedded redis"] = time_redis_stop(runs)
    for name, row in rows.items():
        row["goal_s"] = GOALS[name]
        row["meets_goal"] = row["median_s"] < GOALS[name]
    return {"commands": rows, "load_average_1m": round(os.getloadavg()[0], 2)}


def human(report: dict[str, Any]) -> str:
    lines = [
        f"{'command':<30} {'min':>7} {'median':>7} {'max':>7} {'cpu':>7} {'goal':>6}",
    ]
    for name, r in report["commands"].items():
        cpu = f"{r['cpu_median_s']:.2f}" if r["cpu_median_s"] is not None else "-"
        mark = "" if r["meets_goal"] else "  (over)"
        lines.append(
            f"{name:<30} {r['min_s']:>7.3f} {r['median_s']:>7.3f} {r['max_s']:>7.3f} "
            f"{cpu:>7} {r['goal_s']:>6.1f}{mark}"
        )
    lines.append(f"(seconds; load average when done: {report['load_average_1m']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli", description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-search", action="store_true", help="Skip the indexed data dir.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    report = run(args.runs, search=not args.no_search)
    print(json.dumps(report, indent=2) if args.json else human(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
