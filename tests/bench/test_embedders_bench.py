"""The embedder benchmark scores what it should: only the asked split, by query language, with
document vectors cached per embedder and posts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.embedders import quality
from retrieval.embedder import Embedder
from tests.retrieval.builders import make_post


def _write(tmp_path: Path) -> tuple[Path, Path]:
    posts = [
        make_post("quake", "Strong earthquake shakes the city, buildings damaged", hours=0),
        make_post("cats", "My cat knocked a glass off the table again", hours=1),
        make_post("flood", "The river flooded the old town overnight", hours=2),
    ]
    posts_file = tmp_path / "posts.jsonl"
    posts_file.write_text("".join(p.to_jsonl() + "\n" for p in posts), encoding="utf-8")
    rows = [
        {"query": "earthquake damage", "relevant": ["quake"], "lang": "en", "split": "tune"},
        {"query": "cat videos", "relevant": ["cats"], "lang": "en", "split": "tune"},
        # A tune query whose answer cannot be found: it must pull the "de" figures down.
        {"query": "river flooding", "relevant": ["nowhere"], "lang": "de", "split": "tune"},
        {"query": "flooded town", "relevant": ["flood"], "lang": "en", "split": "test"},
    ]
    queries_file = tmp_path / "queries.jsonl"
    queries_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return posts_file, queries_file


def test_quality_scores_only_the_split_asked_for_by_language(
    tmp_path: Path, minilm: Embedder
) -> None:
    posts, queries = _write(tmp_path)
    tune = quality(minilm, posts, queries, tmp_path / "cache", split="tune")
    assert tune["queries"] == 3 and tune["posts"] == 3
    dense = tune["dense"]
    assert dense["by_lang"]["en"]["ndcg@10"] == 1.0 and dense["by_lang"]["en"]["queries"] == 2
    assert dense["by_lang"]["de"]["ndcg@10"] == 0.0
    assert dense["non-en"] == {"recall@10": 0.0, "ndcg@10": 0.0, "mrr": 0.0, "queries": 1}
    assert dense["all"]["ndcg@10"] == pytest.approx(0.6667, abs=1e-4)
    assert set(tune) >= {"dense", "hybrid+decay", "default"}
    everything = quality(minilm, posts, queries, tmp_path / "cache")
    assert everything["queries"] == 4
    # The posts were embedded once; the second run read the cached vectors.
    assert len(list((tmp_path / "cache" / "bench-vectors").glob("*.npy"))) == 1
