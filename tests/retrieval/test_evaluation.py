"""Retrieval metrics on hand-made rankings, and `evaluate` end to end on a tiny labelled set."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from retrieval.embedder import Embedder
from retrieval.evaluation import (
    EvaluationError,
    evaluate,
    ndcg_at_k,
    read_queries,
    recall_at_k,
    reciprocal_rank,
    score_run,
)
from tests.retrieval.builders import make_post

REL = frozenset({"a", "b"})


def test_recall_is_capped_at_k_relevant_posts() -> None:
    assert recall_at_k(["a", "x", "b"], REL, k=10) == 1.0
    assert recall_at_k(["x", "a"], REL, k=10) == 0.5
    # Twelve relevant posts, all ten shown are relevant: a perfect page.
    many = frozenset(f"r{i}" for i in range(12))
    assert recall_at_k([f"r{i}" for i in range(10)], many, k=10) == 1.0
    assert recall_at_k(["a"], frozenset(), k=10) == 0.0


def test_ndcg_rewards_relevant_posts_near_the_top() -> None:
    assert ndcg_at_k(["a", "b", "x"], REL) == pytest.approx(1.0)
    # Relevant at ranks 2 and 3 instead of 1 and 2.
    expected = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["x", "a", "b"], REL) == pytest.approx(expected)
    assert ndcg_at_k(["x", "y"], REL) == 0.0


def test_reciprocal_rank_is_one_over_the_first_relevant_rank() -> None:
    assert reciprocal_rank(["a"], REL) == 1.0
    assert reciprocal_rank(["x", "y", "b"], REL) == pytest.approx(1 / 3)
    assert reciprocal_rank(["x"] * 10 + ["a"], REL, k=10) == 0.0


def test_score_run_averages_over_queries() -> None:
    scores = score_run([(["a", "b"], REL), (["x", "y"], REL)])
    assert scores == {"recall@10": 0.5, "ndcg@10": 0.5, "mrr": 0.5}


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_evaluate_scores_a_tiny_set_with_known_answers(tmp_path: Path, embedder: Embedder) -> None:
    posts = [
        make_post("quake-old", "Strong earthquake shakes the city, buildings damaged", hours=0),
        make_post("quake-new", "Another earthquake this morning, buildings shaking", hours=50),
        make_post("cats", "My cat knocked a glass off the table again", hours=1),
        make_post("game", "What a football match, last minute winner", hours=2),
        make_post("flood", "The river flooded the old town overnight", hours=3),
    ]
    posts_file = tmp_path / "posts.jsonl"
    posts_file.write_text("".join(p.to_jsonl() + "\n" for p in posts), encoding="utf-8")
    queries_file = write_jsonl(
        tmp_path / "queries.jsonl",
        [
            # At hour 10 the second earthquake has not happened: only the first is findable.
            {
                "query": "earthquake",
                "relevant": ["quake-old"],
                "now": "2024-05-01T22:00:00Z",
                "extra": "ignored",
            },
            {"query": "cat videos", "relevant": ["cats"]},
            {"query": "flooding river", "relevant": ["flood"], "now": "2024-05-03T12:00:00Z"},
        ],
    )
    result = evaluate(posts_file, queries_file, embedder, tmp_path / "work")
    assert result["queries"] == 3
    assert set(result["ablation"]) == {
        "dense",
        "sparse",
        "hybrid",
        "+recency",
        "+diversity",
        "+understanding",
        "default (all)",
    }
    assert result["ablation"]["dense"] == {
        "recall@10": 1.0,
        "ndcg@10": 1.0,
        "mrr": 1.0,
        "queries": 3,
    }
    assert result["dense"] == result["ablation"]["dense"]
    # No split named in the file: one part, "all", with the same figures as the whole.
    assert set(result["splits"]) == {"all"}
    assert result["splits"]["all"]["ndcg@10"] == result["ndcg@10"]
    assert {"fusion rrf", "fusion dbsf", "fusion weighted", "fusion dense-first"} <= set(
        result["variants"]
    )
    # "cat videos" runs at today's date, years after every post: recency must not erase
    # relevance (all decay factors are at their floor), so the cat post still comes first.
    assert result["recall@10"] == 1.0 and result["mrr"] == 1.0
    assert not any((tmp_path / "work").iterdir()), "the evaluation shard is removed afterwards"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "bad query line"),
        ('{"relevant": ["a"]}', "bad query line"),
        ('{"query": "", "relevant": ["a"]}', "non-empty"),
        ('{"query": "x", "relevant": "a"}', "list of post ids"),
        ('{"query": "x", "relevant": ["a"], "now": "yesterday"}', "bad query line"),
        ('{"query": "x", "relevant": ["a"], "now": "2024-05-01T00:00:00"}', "time zone"),
    ],
)
def test_malformed_query_lines_are_reported_with_their_line_number(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"query": "fine", "relevant": ["a"]}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(EvaluationError, match=message) as info:
        read_queries(path)
    assert "q.jsonl:2" in str(info.value)


def test_missing_files_are_reported_plainly(tmp_path: Path, embedder: Embedder) -> None:
    with pytest.raises(EvaluationError, match="not found"):
        evaluate(tmp_path / "nope.jsonl", tmp_path / "nope2.jsonl", embedder, tmp_path)


def test_evaluate_reports_splits_kinds_languages_and_unanswerable(
    tmp_path: Path, embedder: Embedder
) -> None:
    posts = [
        make_post("quake", "Strong earthquake shakes the city, buildings damaged", hours=0),
        make_post("sismo", "Fuerte sismo sacude la ciudad, edificios dañados", hours=1),
        make_post("cats", "My cat knocked a glass off the table again", hours=2),
        make_post("flood", "The river flooded the old town overnight", hours=3),
    ]
    posts_file = tmp_path / "posts.jsonl"
    posts_file.write_text("".join(p.to_jsonl() + "\n" for p in posts), encoding="utf-8")
    now = "2024-05-01T20:00:00Z"
    queries_file = write_jsonl(
        tmp_path / "queries.jsonl",
        [
            {
                "query": "earthquake damage",
                "relevant": ["quake", "sismo"],
                "now": now,
                "kind": "breaking",
                "lang": "en",
                "split": "tune",
                "story": "quake",
            },
            {
                "query": "daños del terremoto",
                "relevant": ["sismo", "quake"],
                "now": now,
                "kind": "breaking",
                "lang": "es",
                "split": "tune",
                "story": "quake",
            },
            {
                "query": "river flooding",
                "relevant": ["flood"],
                "now": now,
                "kind": "story",
                "lang": "en",
                "split": "test",
                "story": "flood",
            },
            {
                "query": "who won the chess world championship",
                "relevant": [],
                "now": now,
                "kind": "unanswerable",
                "lang": "en",
                "split": "test",
                "story": "none:chess",
            },
        ],
    )
    result = evaluate(posts_file, queries_file, embedder, tmp_path / "work")
    assert set(result["splits"]) == {"tune", "test"}
    tune, test = result["splits"]["tune"], result["splits"]["test"]
    assert tune["queries"] == 2 and test["queries"] == 1, "unanswerable queries are not averaged"
    assert set(tune["by_language"]) == {"en", "es"}
    assert set(test["by_kind"]) == {"story"}, "a kind with no answerable query has no nDCG row"
    assert test["by_kind"]["story"]["dense"]["ndcg@10"] == test["dense"]["ndcg@10"]
    assert test["unanswerable"]["queries"] == 1
    assert tune["unanswerable"]["queries"] == 0
    # Nothing about chess in this feed: the best dense match is weak, the result is flagged.
    assert test["unanswerable"]["flagged"] == 1.0
    assert result["queries"] == 4


def test_vectors_are_cached_per_embedder_and_corpus(tmp_path: Path, embedder: Embedder) -> None:
    from retrieval.eval_index import embed_cached

    calls: list[int] = []

    class Counting:
        dim, name = embedder.dim, embedder.name

        def embed(self, texts):  # type: ignore[no-untyped-def]
            calls.append(len(texts))
            return embedder.embed(texts)

    first = embed_cached(["a cat", "a dog"], Counting(), tmp_path)  # type: ignore[arg-type]
    again = embed_cached(["a cat", "a dog"], Counting(), tmp_path)  # type: ignore[arg-type]
    other = embed_cached(["a cat", "a bird"], Counting(), tmp_path)  # type: ignore[arg-type]
    assert calls == [2, 2], "the second identical call is read from the cache"
    assert (first == again).all() and not (first == other).all()
