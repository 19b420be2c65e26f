"""Embedders: shapes, normalisation, meaning, and the static table's cache."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.embedder import Embedder as EmbedderProtocol
from retrieval.embedder import (
    EmbedderError,
    StaticEmbedder,
    default_model_path,
    open_embedder,
)


def test_minilm_gives_unit_rows_that_put_similar_texts_together(
    embedder: EmbedderProtocol,
) -> None:
    rows = embedder.embed(["earthquake hits the city", "a strong quake shook town", "my cat naps"])
    assert rows.shape == (3, embedder.dim) == (3, 384)
    assert rows.dtype == np.float32
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert rows[0] @ rows[1] > rows[0] @ rows[2] + 0.2


def test_the_transformer_runs_on_one_thread_of_its_own_whoever_calls() -> None:
    """torch's CPU kernels use an OpenMP team per calling thread; one thread keeps one team
    (with many, idle teams spun against the working one and ingest embedded ~25% slower)."""
    embedder = open_embedder()
    ran_on: list[int] = []
    encode = embedder._model.encode  # type: ignore[attr-defined]

    def recording(*args: Any, **kwargs: Any) -> Any:
        ran_on.append(threading.get_ident())
        return encode(*args, **kwargs)

    embedder._model.encode = recording  # type: ignore[attr-defined]
    callers: list[int] = []
    rows: list[Any] = []

    def call(text: str) -> None:
        callers.append(threading.get_ident())
        rows.append(embedder.embed([text]))

    threads = [threading.Thread(target=call, args=(f"post number {i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rows.append(embedder.embed(["and one from the test's own thread"]))
    assert len(ran_on) == 5 and len(set(ran_on)) == 1
    assert ran_on[0] not in [*callers, threading.get_ident()]
    assert all(r.shape == (1, 384) for r in rows)


def test_no_texts_give_an_empty_matrix(embedder: EmbedderProtocol) -> None:
    assert embedder.embed([]).shape == (0, embedder.dim)


def _tiny_static() -> StaticEmbedder:
    """A static embedder over the real tokenizer with a hand-made table (no distillation)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(default_model_path())).backend_tokenizer
    table = np.zeros((len(tok.get_vocab()), 4), dtype=np.float32)
    cat, dog = tok.token_to_id("cat"), tok.token_to_id("dog")
    table[cat] = [1, 0, 0, 0]
    table[dog] = [0, 3, 0, 0]
    return StaticEmbedder(table, tok, "static:test")


def test_static_embedding_is_the_normalised_mean_of_token_rows() -> None:
    emb = _tiny_static()
    rows = emb.embed(["cat", "dog", "cat dog", "", "zzz unknownword"])
    assert rows.shape == (5, 4)
    assert np.allclose(rows[0], [1, 0, 0, 0])
    assert np.allclose(rows[1], [0, 1, 0, 0])
    assert np.allclose(rows[2], np.array([1, 3, 0, 0]) / np.sqrt(10))
    # Nothing to average: a zero row, never NaN.
    assert np.all(rows[3] == 0) and not np.isnan(rows).any()


def test_static_embedder_distils_once_then_reads_its_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retrieval import embedder as module

    calls: list[int] = []

    def fake_distil(path: Path, dim: int = 8, batch: int = 0) -> np.ndarray:
        calls.append(dim)  # the real one takes a minute; the cache logic is what is tested
        return np.ones((30522, dim), dtype=np.float32)

    monkeypatch.setattr(module, "distil_token_table", fake_distil)
    a = StaticEmbedder.load_or_distil(tmp_path, dim=8)
    b = StaticEmbedder.load_or_distil(tmp_path, dim=8)
    assert calls == [8]
    assert a.dim == b.dim == 8
    assert a.name == "static:all-MiniLM-L6-v2-d8"
    assert len(list(tmp_path.glob("static-*.npy"))) == 1


@pytest.mark.slow
def test_a_distilled_static_table_keeps_meaning(tmp_path: Path) -> None:
    emb = open_embedder("static", cache_dir=tmp_path)
    rows = emb.embed(
        ["earthquake damage in the city", "quake destroys buildings", "cute cat photo"]
    )
    assert rows.shape == (3, 256)
    assert rows[0] @ rows[1] > rows[0] @ rows[2]


def test_unknown_kinds_and_missing_models_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown embedder kind"):
        open_embedder("word2vec")
    with pytest.raises(ValueError, match="cache_dir"):
        open_embedder("static")
    with pytest.raises(EmbedderError, match="not found"):
        open_embedder("sentence-transformers", model=str(tmp_path / "nope"))


def _random_static() -> StaticEmbedder:
    """The real tokenizer with a random table: any change in token ids changes the vectors."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(default_model_path())).backend_tokenizer
    tok.no_padding()
    tok.enable_truncation(256)
    table = np.random.default_rng(7).standard_normal((len(tok.get_vocab()), 16))
    return StaticEmbedder(table.astype(np.float32), tok, "static:test")


def _reference(emb: StaticEmbedder, texts: list[str]) -> np.ndarray:
    """The vectors straight from the tokenizer's own ids (what the ASCII shortcut must match)."""
    rows = []
    for enc in emb._tokenizer.encode_batch(texts, add_special_tokens=False):
        total = emb._table[enc.ids].sum(axis=0) if enc.ids else np.zeros(emb.dim)
        norm = np.linalg.norm(total)
        rows.append(total / norm if norm else total)
    return np.array(rows, dtype=np.float32)


ODD_TEXTS = [
    "RT @alice: Breaking!!! The Met Gala 2024 -- https://t.co/xyz?a=1&b=2 #MetGala",
    "tabs\tand\nnewlines\r\nand  double  spaces",
    "control\x01chars\x7fjoin their\x0bneighbours",
    "café naïve résumé — “quotes” 🎉 日本語のテキスト",
    "",
    "   ",
    "x" * 150 + " long words become [UNK]",
    " ".join(["word"] * 400),  # longer than the 256-piece window: truncated the same way
    "snake_case and CamelCase and 3.14159 and $AAPL and a@b.c",
]


def test_static_embedding_matches_the_tokenizer_on_real_and_odd_texts() -> None:
    import json

    from tests.conftest import BLUESKY_200

    emb = _random_static()
    texts = [json.loads(line)["text"] for line in BLUESKY_200.read_text().splitlines()]
    texts += ODD_TEXTS
    got = emb.embed(texts)
    assert np.allclose(got, _reference(emb, texts), atol=1e-5)
    # A second pass is served from the word cache and must not drift either.
    assert np.allclose(emb.embed(texts[::-1]), _reference(emb, texts[::-1]), atol=1e-5)


_FUZZ_EMBEDDER: list[StaticEmbedder] = []


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=120))
def test_any_ascii_text_embeds_as_the_tokenizer_would(text: str) -> None:
    if not _FUZZ_EMBEDDER:
        _FUZZ_EMBEDDER.append(_random_static())
    emb = _FUZZ_EMBEDDER[0]
    assert np.allclose(emb.embed([text]), _reference(emb, [text]), atol=1e-5)
