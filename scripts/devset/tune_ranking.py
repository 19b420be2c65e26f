"""Choose the ranking defaults on the dev set's TUNE part only (never look at test here).

    .venv/bin/python scripts/devset/tune_ranking.py [--top 25] [--json OUT]

Sweeps fusion method, dense weight, recency rule, half-life and floor over the same candidates
(`retrieval.evaluation.evaluate(..., variants=...)`) and prints the tune part's nDCG@10 and MRR,
best first, beside dense only. The test part is computed by the same call but never printed:
the defaults are chosen from this table, then `quipfeed eval retrieval` reports both parts.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import platformdirs

from retrieval.embedder import open_embedder
from retrieval.evaluation import FULL_POSTS, FULL_QUERIES, default_variants, evaluate
from retrieval.ranking import RankingOptions


def grid() -> dict[str, RankingOptions]:
    base = RankingOptions()
    out: dict[str, RankingOptions] = {}
    weights = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
    recencies: list[tuple[str, dict[str, object]]] = [("none", {"decay": "none"})]
    for hours in (6, 24, 72, 168):
        recencies.append(
            (f"fixed {hours}h", {"decay": "fixed", "half_life": timedelta(hours=hours)})
        )
    for scale in (0.5, 1.0, 2.0, 4.0):
        recencies.append((f"adaptive x{scale}", {"decay": "adaptive", "adaptive_scale": scale}))
    for fusion, weight, (rname, rec), floor in itertools.product(
        ("rrf", "dbsf", "weighted"), weights, recencies, (0.1, 0.3, 0.5, 0.7)
    ):
        if rec["decay"] == "none" and floor != 0.5:
            continue
        name = f"{fusion} w{weight} {rname} floor {floor}"
        out[name] = dataclasses.replace(
            base, fusion=fusion, dense_weight=weight, floor=floor, **rec
        )  # type: ignore[arg-type]
    for (rname, rec), floor in itertools.product(recencies, (0.1, 0.3, 0.5, 0.7)):
        out[f"dense-first {rname} floor {floor}"] = dataclasses.replace(
            base,
            fusion="dense-first",
            floor=floor,
            **rec,  # type: ignore[arg-type]
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posts", type=Path, default=FULL_POSTS)
    parser.add_argument("--queries", type=Path, default=FULL_QUERIES)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", type=Path, help="write the tune part's table here")
    parser.add_argument("--kind", default="sentence-transformers", help="embedder kind")
    parser.add_argument("--small", action="store_true", help="only the default's variants")
    args = parser.parse_args()
    variants = default_variants(RankingOptions()) if args.small else grid()
    cache = Path(platformdirs.user_cache_dir("quipfeed", appauthor=False)) / "eval-vectors"
    with tempfile.TemporaryDirectory() as work:
        result = evaluate(
            args.posts,
            args.queries,
            open_embedder(),
            Path(work),
            variants=variants,
            cache_dir=cache,
        )
    tune = {name: row["tune"] for name, row in result["variants"].items() if "tune" in row}
    if not tune:
        print("no tune split in the queries", file=sys.stderr)
        return 2
    dense = result["splits"]["tune"]["dense"]
    print(f"tune: {dense['queries']} queries; dense only nDCG@10 {dense['ndcg@10']:.4f}")
    part = result["splits"]["tune"]
    print(f"  default pipeline nDCG@10 {part['ndcg@10']:.4f}; stages:")
    for name, row in part["ablation"].items():
        print(f"    {name:<16} {row['ndcg@10']:.4f}  mrr {row['mrr']:.4f}")
    for key in ("by_kind", "by_language"):
        for group, row in part[key].items():
            d, b = row["default"], row["dense"]
            print(f"  {group:<12} {d['ndcg@10']:.3f} vs dense {b['ndcg@10']:.3f} ({b['queries']})")
    print(f"  unanswerable: {part['unanswerable']}")
    ranked = sorted(tune.items(), key=lambda kv: -kv[1]["ndcg@10"])
    for name, row in ranked[: args.top]:
        print(f"  {row['ndcg@10']:.4f}  mrr {row['mrr']:.4f}  {name}")
    if args.json:
        args.json.write_text(json.dumps(tune, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
