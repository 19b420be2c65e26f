"""The evaluation's figures as a table a person reads: splits side by side, dense beside all."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NDCG = "ndcg@10"


def _cell(row: Mapping[str, Any] | None, base: Mapping[str, Any] | None) -> str:
    if not row or not row.get("queries"):
        return f"{'—':>24}"
    delta = ""
    if base and base.get("queries"):
        delta = f"{row[NDCG] - base[NDCG]:+.3f}"
    return f"{row[NDCG]:.3f} {delta:>7} {row['mrr']:.3f}    "


def _header(splits: list[str]) -> str:
    return f"{'':<24}" + "".join(f"{s + ' (nDCG Δdense MRR)':<28}" for s in splits)


def render(result: Mapping[str, Any]) -> str:
    """The whole report: headline, ablation, variants, kinds, languages, unanswerable."""
    splits: dict[str, Any] = result.get("splits") or {"all": result}
    names = list(splits)
    counts = ", ".join(f"{n} {splits[n]['queries']}" for n in names)
    lines = [
        f"{result['queries']} queries ({counts} answerable), {result['posts']:,} posts, "
        f"{result['embedder']}",
        f"default: nDCG@10 {result[NDCG]:.3f}  recall@10 {result['recall@10']:.3f}  "
        f"MRR {result['mrr']:.3f}   ({result['config']})",
        "",
        "stages (each adds to the one above; Δ is against dense only)",
        _header(names),
    ]
    for config in result["ablation"]:
        cells = "".join(_cell(splits[n]["ablation"].get(config), splits[n]["dense"]) for n in names)
        lines.append(f"  {config:<22}{cells}")
    if result.get("variants"):
        lines += ["", "fusion and recency, on the same candidates", _header(names)]
        for name, per_split in result["variants"].items():
            cells = "".join(_cell(per_split.get(n), splits[n]["dense"]) for n in names)
            lines.append(f"  {name:<22}{cells}")
    for title, key in (("by kind", "by_kind"), ("by language", "by_language")):
        lines += ["", f"{title}: default vs dense, nDCG@10 (queries)"]
        groups = sorted({g for n in names for g in splits[n][key]})
        for group in groups:
            parts = []
            for n in names:
                row = splits[n][key].get(group)
                if row is None:
                    parts.append(f"{n} —")
                    continue
                d, b = row["default"], row["dense"]
                parts.append(f"{n} {d[NDCG]:.3f} vs {b[NDCG]:.3f} ({d['queries']})")
            lines.append(f"  {group:<14}" + "   ".join(parts))
    lines += ["", "unanswerable: share flagged low-confidence or empty; false alarms on the rest"]
    for n in names:
        u = splits[n]["unanswerable"]
        if u["queries"]:
            lines.append(
                f"  {n}: {u['flagged']:.2f} of {u['queries']} flagged; "
                f"false alarms {u['false_alarms']:.2f}"
            )
    return "\n".join(lines)
