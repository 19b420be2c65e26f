"""QUIPFEED_EMBEDDER__KIND reaches `embedder_for`: every kind `open_embedder` knows is a setting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from quipfeed.runtime import embedder_for
from quipfeed.settings import EmbedderSettings, Settings
from retrieval.embedder import EMBEDDER_KINDS, StaticEmbedder


def test_every_embedder_kind_is_a_valid_setting_and_nothing_else_is() -> None:
    for kind in EMBEDDER_KINDS:
        assert EmbedderSettings(kind=kind).kind == kind  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        EmbedderSettings(kind="word2vec")  # type: ignore[arg-type]


def test_the_environment_selects_the_static_multilingual_e5_embedder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from retrieval import e5_embedder

    def small_table(weights: e5_embedder.E5Weights, dim: int = 8, **_: object) -> np.ndarray:
        # The real distillation takes minutes; the wiring is what is tested here.
        return np.ones((len(weights.pieces), dim), dtype=np.float32)

    monkeypatch.setattr(e5_embedder, "distil_e5_token_table", small_table)
    monkeypatch.setenv("QUIPFEED_EMBEDDER__KIND", "static-multilingual-e5")
    monkeypatch.setenv("QUIPFEED_DATA_DIR", str(tmp_path))
    embedder = embedder_for(Settings())
    assert isinstance(embedder, StaticEmbedder)
    assert embedder.name.startswith("static:multilingual-e5-small")
    assert list((tmp_path / "embedders").glob("static-multilingual-e5-small-*.npy"))
