"""The conformance suite runs against `SGLANG_URL` when set (a real SGLang, unchanged), else
against `quipfeed serve-model`'s app on the tiny model, started on 127.0.0.1."""

from __future__ import annotations

import os

import httpx
import pytest
from openai import AsyncOpenAI

from tests.tiny_model_fixture import tiny_engine, tiny_model_path, tiny_server_url

__all__ = ["tiny_engine", "tiny_model_path", "tiny_server_url"]


@pytest.fixture(scope="session")
def server_url(request: pytest.FixtureRequest) -> str:
    url = os.environ.get("SGLANG_URL")
    if url:
        return url.rstrip("/").removesuffix("/v1")
    return str(request.getfixturevalue("tiny_server_url"))


@pytest.fixture(scope="session")
def model_name(server_url: str) -> str:
    cards = httpx.get(f"{server_url}/v1/models", timeout=30).json()["data"]
    return str(cards[0]["id"])


@pytest.fixture
async def client(server_url: str):  # type: ignore[no-untyped-def]
    c = AsyncOpenAI(
        base_url=f"{server_url}/v1",
        api_key=os.environ.get("SGLANG_API_KEY", "none"),
        max_retries=0,
        timeout=120,
    )
    yield c
    await c.close()
