"""Session-wide tiny MoE model, engine and local OpenAI-compatible server, shared by
`tests/inference` and `tests/conformance` (each conftest imports these fixtures; the
module-level cache makes them one per test session, not one per directory)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from inference.local import LocalEngine
from inference.serve import ServerThread
from inference.tiny_model import build_tiny_moe


@functools.cache
def _tiny_model_dir() -> Path:
    root = Path(tempfile.mkdtemp(prefix="quipfeed-tiny-moe-"))
    atexit.register(shutil.rmtree, root, True)
    return build_tiny_moe(root / "tiny-moe")


@functools.cache
def _shared_engine() -> LocalEngine:
    engine = LocalEngine.load(_tiny_model_dir(), device="cpu", max_batch_size=32)
    atexit.register(engine.close)
    return engine


@functools.cache
def _shared_server() -> ServerThread:
    server = ServerThread(_shared_engine()).start()
    atexit.register(server.stop)
    return server


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """A folder holding a tiny random-weight Qwen3-MoE and its ChatML tokenizer."""
    return _tiny_model_dir()


@pytest.fixture(scope="session")
def tiny_engine() -> Iterator[LocalEngine]:
    """One `LocalEngine` on the tiny model (CPU, no prefix cache), shared by the session."""
    yield _shared_engine()


@pytest.fixture(scope="session")
def tiny_server_url() -> str:
    """Base URL of `quipfeed serve-model`'s app serving the shared tiny engine on 127.0.0.1."""
    return _shared_server().url
