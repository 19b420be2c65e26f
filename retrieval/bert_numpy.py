"""A BERT sentence encoder (all-MiniLM-L6-v2) in numpy: the query embedder for a process that
has no model loaded, such as `quipfeed search` without a running daemon.

Importing torch, transformers and sentence-transformers costs several seconds of CPU before
the first vector (they pull in scipy, scikit-learn, torch.distributed …); embedding one query
needs none of it. This runs the same network from the same files: the weights memory-mapped
straight from `model.safetensors` (only the word-embedding rows a query uses are read), the
tokenizer from `tokenizer.json` through the Rust `tokenizers`, then BERT's encoder, mean
pooling and L2 normalisation, as the sentence-transformers pipeline of that folder declares.
Its vectors match sentence-transformers' to float32 rounding (tests/retrieval checks them on
real posts), so a store filled by the transformer is queried with this one.

Only folders it can reproduce exactly are accepted (`supports`): a BERT with absolute
positions and GELU, pooled by the plain token mean, then normalised.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def supports(folder: Path) -> bool:
    """True when `folder` is a sentence-transformers BERT with mean pooling and normalisation,
    stored as one safetensors file with a `tokenizer.json`."""
    try:
        config = _read_json(folder / "config.json")
        modules = [m["type"].rsplit(".", 1)[-1] for m in _read_json(folder / "modules.json")]
        pooling_path = next(
            m["path"] for m in _read_json(folder / "modules.json") if m["type"].endswith("Pooling")
        )
        pooling = _read_json(folder / pooling_path / "config.json")
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return False
    mean_only = pooling.get("pooling_mode_mean_tokens") is True and not any(
        v
        for k, v in pooling.items()
        if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens"
    )
    return (
        config.get("model_type") == "bert"
        and config.get("hidden_act") == "gelu"
        and config.get("position_embedding_type", "absolute") == "absolute"
        and modules == ["Transformer", "Pooling", "Normalize"]
        and mean_only
        and (folder / "model.safetensors").is_file()
        and (folder / "tokenizer.json").is_file()
    )


def _safetensors(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Every tensor of a safetensors file as a read-only memory map (nothing is read yet)."""
    with path.open("rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = _DTYPES[info["dtype"]]
        tensors[name] = raw[start:end].view(dtype).reshape(info["shape"])
    return tensors


def _layer_norm(x: Vectors, weight: Vectors, bias: Vectors, eps: float) -> Vectors:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + eps) * weight + bias).astype(np.float32)


def _erf(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """erf to ~1e-7 (Abramowitz & Stegun 7.1.26), below float32's own rounding at these sizes;
    numpy has no erf and scipy costs a fifth of a second to import."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (
        0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429)))
    )
    return sign * (1.0 - poly * np.exp(-a * a))


def _gelu(x: Vectors) -> Vectors:
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + _erf(x64 / math.sqrt(2.0)))).astype(np.float32)


class NumpyBertEmbedder:
    """`Embedder` over a folder `supports` accepts; texts are encoded one at a time (no
    padding), which is what a query needs."""

    def __init__(self, folder: Path, name: str) -> None:
        from tokenizers import Tokenizer

        folder = Path(folder)
        if not supports(folder):
            raise ValueError(f"{folder} is not a mean-pooled BERT sentence encoder")
        config = _read_json(folder / "config.json")
        max_tokens = 512
        with_st_config = folder / "sentence_bert_config.json"
        if with_st_config.is_file():
            max_tokens = int(_read_json(with_st_config).get("max_seq_length") or max_tokens)
        self._max_tokens = min(max_tokens, int(config["max_position_embeddings"]))
        self._heads = int(config["num_attention_heads"])
        self._layers = int(config["num_hidden_layers"])
        self._eps = float(config.get("layer_norm_eps", 1e-12))
        self._w = _safetensors(folder / "model.safetensors")
        self._prefix = "bert." if "bert.embeddings.word_embeddings.weight" in self._w else ""
        self._dim = int(config["hidden_size"])
        self._name = name
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(self._max_tokens)
        self._tokenizer = tokenizer

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return self._name

    def embed(self, texts: Sequence[str]) -> Vectors:
        from threadpoolctl import threadpool_limits

        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        # One BLAS thread: a query's matrices are a few dozen rows, too small to split, and a
        # second thread spinning for a busy core made a 70 ms query take over a second.
        with threadpool_limits(1, user_api="blas"):
            for i, encoding in enumerate(self._tokenizer.encode_batch(list(texts))):
                out[i] = self._encode(np.asarray(encoding.ids, dtype=np.int64))
        return out

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        # MiniLM embeds questions and posts alike.
        return self.embed(texts)

    def _p(self, name: str) -> Vectors:
        return np.asarray(self._w[self._prefix + name], dtype=np.float32)

    def _dense(self, x: Vectors, name: str) -> Vectors:
        return (x @ self._p(f"{name}.weight").T + self._p(f"{name}.bias")).astype(np.float32)

    def _encode(self, ids: npt.NDArray[np.int64]) -> Vectors:
        n = len(ids)
        word = np.asarray(self._w[self._prefix + "embeddings.word_embeddings.weight"][ids])
        x = (
            word
            + self._p("embeddings.position_embeddings.weight")[:n]
            + self._p("embeddings.token_type_embeddings.weight")[0]
        ).astype(np.float32)
        x = _layer_norm(
            x,
            self._p("embeddings.LayerNorm.weight"),
            self._p("embeddings.LayerNorm.bias"),
            self._eps,
        )
        head = self._dim // self._heads
        for layer in range(self._layers):
            at = f"encoder.layer.{layer}"
            q, k, v = (
                self._dense(x, f"{at}.attention.self.{part}")
                .reshape(n, self._heads, head)
                .transpose(1, 0, 2)
                for part in ("query", "key", "value")
            )
            scores = q @ k.transpose(0, 2, 1) / np.float32(math.sqrt(head))
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            weights = scores / scores.sum(axis=-1, keepdims=True)
            context = (weights @ v).transpose(1, 0, 2).reshape(n, self._dim)
            x = _layer_norm(
                x + self._dense(context, f"{at}.attention.output.dense"),
                self._p(f"{at}.attention.output.LayerNorm.weight"),
                self._p(f"{at}.attention.output.LayerNorm.bias"),
                self._eps,
            )
            hidden = _gelu(self._dense(x, f"{at}.intermediate.dense"))
            x = _layer_norm(
                x + self._dense(hidden, f"{at}.output.dense"),
                self._p(f"{at}.output.LayerNorm.weight"),
                self._p(f"{at}.output.LayerNorm.bias"),
                self._eps,
            )
        pooled = x.mean(axis=0)
        norm = float(np.linalg.norm(pooled))
        return (pooled / norm if norm > 0 else pooled).astype(np.float32)
