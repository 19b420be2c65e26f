"""The numpy query encoder gives sentence-transformers' vectors for MiniLM, on real posts, and
refuses folders it cannot reproduce."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from retrieval import bert_numpy
from retrieval.embedder import default_model_path, open_query_embedder
from tests.conftest import BLUESKY_200


def test_numpy_minilm_matches_sentence_transformers_on_real_posts(minilm) -> None:  # type: ignore[no-untyped-def]
    texts = [json.loads(line)["text"] for line in BLUESKY_200.read_text().splitlines()]
    # Beyond the fixture: empty, one long enough to be truncated, accents, emoji, CJK.
    texts += ["", "harbour " * 400, "Ünïcödé café 日本語 🎉 #MetGala @someone.bsky.social"]
    encoder = open_query_embedder()
    assert isinstance(encoder, bert_numpy.NumpyBertEmbedder)
    assert (encoder.name, encoder.dim) == (minilm.name, minilm.dim)
    ours, theirs = encoder.embed(texts), minilm.embed(texts)
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    assert float(np.abs(ours - theirs).max()) < 1e-5
    # Same neighbours: each post's nearest other post is the same under both.
    sims_ours, sims_theirs = ours @ ours.T, theirs @ theirs.T
    np.fill_diagonal(sims_ours, -1)
    np.fill_diagonal(sims_theirs, -1)
    assert (sims_ours.argmax(1) == sims_theirs.argmax(1)).all()


def test_folders_it_cannot_reproduce_fall_back_to_the_model(tmp_path: Path) -> None:
    folder = tmp_path / "cls-pooled"
    shutil.copytree(default_model_path(), folder)
    pooling = folder / "1_Pooling" / "config.json"
    config = json.loads(pooling.read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(config))
    assert bert_numpy.supports(default_model_path())
    assert not bert_numpy.supports(folder)
    assert not bert_numpy.supports(tmp_path / "missing")
    # Quantised vectors differ from float ones: the quantised transformer itself embeds them.
    quantised = open_query_embedder(quantize=True)
    assert not isinstance(quantised, bert_numpy.NumpyBertEmbedder)
