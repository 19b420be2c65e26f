"""`PostStore` on Qdrant Edge: an in-process shard in a folder, owned by one process at a time."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import qdrant_edge as q

from retrieval import schema
from retrieval.post import Post, point_id
from retrieval.query_plan import (
    DEFAULT_FUSION,
    TIE_MARGIN,
    FilterSpec,
    Fusion,
    QueryPlan,
    plan_query,
)
from retrieval.store import Hit, StoreQuery, StoreSummary, StoreUnavailable
from retrieval.why import explain

# Sources are few (one per configured feed); facets beyond this are cut.
_MAX_SOURCES = 1_000
# A writer that never calls `sync` still gets one this often, so the WAL stays bounded.
AUTO_SYNC_POINTS = 100_000


def edge_config(dim: int) -> q.EdgeConfig:
    return q.EdgeConfig(
        vectors={schema.DENSE: q.EdgeVectorParams(size=dim, distance=q.Distance.Cosine)},
        sparse_vectors={schema.SPARSE: q.EdgeSparseVectorParams(modifier=q.Modifier.Idf)},
    )


def stored_dim(path: Path) -> int | None:
    """The dense vector width a shard at `path` was created with, None when there is no shard.
    Read from the `edge_config.json` Qdrant Edge keeps beside it, so no embedding model has to
    load for a command that only counts (`quipfeed stats`)."""
    import json

    try:
        config = json.loads((Path(path) / "edge_config.json").read_text())
        return int(config["vectors"][schema.DENSE]["size"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreUnavailable(f"cannot read the shard's configuration at {path}: {exc}") from exc


class EdgeStore:
    """Posts in a Qdrant Edge shard at `path` (created if missing).

    Thread-safe: calls are serialised by a lock. A write survives this process being killed as
    soon as it returns (Edge records it in its WAL first, and replays the WAL on load); `sync`
    (or `close`) flushes the WAL and segments to disk so it survives a power loss too. A flush
    costs ~15–250 ms whatever the write size, so writers sync once per batch of batches, not per
    write; a writer that never syncs is synced every `AUTO_SYNC_POINTS` points, which bounds the
    WAL's size. Raises `StoreUnavailable` when the shard is open in another process or was
    created for a different vector size.
    """

    def __init__(self, path: Path, dim: int, *, fusion: Fusion = DEFAULT_FUSION) -> None:
        self.path = Path(path)
        self.dim = dim
        self.fusion: Fusion = fusion
        self._lock = threading.RLock()
        self._unsynced = 0
        self._shard: q.EdgeShard | None = self._open()

    def _open(self) -> q.EdgeShard:
        config = edge_config(self.dim)
        has_data = self.path.is_dir() and any(self.path.iterdir())
        try:
            if has_data:
                shard = q.EdgeShard.load(str(self.path), config)
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                shard = q.EdgeShard.create(str(self.path), config)
        except Exception as exc:  # qdrant_edge raises plain Exception with a message
            message = str(exc)
            if "WouldBlock" in message:
                raise StoreUnavailable(
                    f"the Qdrant Edge shard at {self.path} is in use by another process "
                    "(only one process may open it; stop the other quipfeed process, or point "
                    "this one at a Qdrant server with QUIPFEED_QDRANT__URL)"
                ) from exc
            if "incompatible" in message.lower():
                raise StoreUnavailable(
                    f"the Qdrant Edge shard at {self.path} was built for other vectors than "
                    f"this embedder's ({self.dim} dimensions): {message}"
                ) from exc
            raise StoreUnavailable(
                f"cannot open Qdrant Edge shard at {self.path}: {message}"
            ) from exc
        if not has_data:
            for name in schema.DATETIME_FIELDS:
                shard.update(
                    q.UpdateOperation.create_field_index(name, q.PayloadSchemaType.Datetime)
                )
            for name in schema.KEYWORD_FIELDS:
                shard.update(
                    q.UpdateOperation.create_field_index(name, q.PayloadSchemaType.Keyword)
                )
            for name in schema.FLOAT_FIELDS:
                shard.update(q.UpdateOperation.create_field_index(name, q.PayloadSchemaType.Float))
            shard.flush()
        return shard

    @property
    def _s(self) -> q.EdgeShard:
        if self._shard is None:
            raise StoreUnavailable(f"the store at {self.path} is closed")
        return self._shard

    # --- writes -------------------------------------------------------------------------

    def upsert(self, posts: Sequence[Post], dense: Sequence[Sequence[float]]) -> None:
        if len(posts) != len(dense):
            raise ValueError(f"{len(posts)} posts but {len(dense)} vectors")
        if not posts:
            return
        # An embedder's float32 matrix converts in one call (a list per row per float is ~35 µs
        # a point at 256 dims, a tenth of the indexer's budget per post).
        # (Duck-typed: numpy itself need not load for a process that only reads the store.)
        to_list = getattr(dense, "tolist", None)
        rows = to_list() if callable(to_list) else [[float(x) for x in vector] for vector in dense]
        points = []
        for post, vector in zip(posts, rows, strict=True):
            if len(vector) != self.dim:
                raise ValueError(
                    f"vector for {post.id} has {len(vector)} dims, store has {self.dim}"
                )
            indices, values = schema.sparse_document(post)
            points.append(
                q.Point(
                    point_id(post.id),
                    {schema.DENSE: vector, schema.SPARSE: q.SparseVector(indices, values)},
                    schema.post_payload(post),
                )
            )
        self._write(q.UpdateOperation.upsert_points(points), len(points))

    def delete(self, post_ids: Sequence[str]) -> None:
        if not post_ids:
            return
        self._write(q.UpdateOperation.delete_points([point_id(p) for p in post_ids]), len(post_ids))

    def _write(self, operation: q.UpdateOperation, points: int) -> None:
        with self._lock:
            self._s.update(operation)
            self._unsynced += points
            if self._unsynced >= AUTO_SYNC_POINTS:
                self.sync()

    def sync(self) -> None:
        with self._lock:
            self._s.flush()
            self._unsynced = 0

    def delete_where(
        self,
        *,
        native_id: str | None = None,
        author_id: str | None = None,
        created_before: datetime | None = None,
    ) -> None:
        must: list[Any] = []
        if native_id is not None:
            must.append(q.FieldCondition("native_id", match=q.MatchValue(native_id)))
        if author_id is not None:
            must.append(q.FieldCondition("author_id", match=q.MatchValue(author_id)))
        if created_before is not None:
            must.append(
                q.FieldCondition(
                    schema.CREATED_AT, range=q.RangeDateTime(lt=schema.rfc3339(created_before))
                )
            )
        if not must:
            raise ValueError("delete_where needs at least one condition")
        self._write(q.UpdateOperation.delete_points_by_filter(q.Filter(must=must)), 1)

    # --- reads --------------------------------------------------------------------------

    def query(self, request: StoreQuery) -> list[Hit]:
        plan = plan_query(request, self.dim, self.fusion)
        requests = [_final_request(plan)] + [_base_request(plan, kind) for kind in plan.base_modes]
        with self._lock:
            results = self._s.query_batch(q.QueryBatchRequest(requests))
        final = [(str(p.id), p.score, p.payload or {}) for p in results[0]]
        bases: dict[str, dict[str, float]] = {
            kind: {str(p.id): p.score for p in res}
            for kind, res in zip(plan.base_modes, results[1:], strict=True)
        }
        return explain(plan, final, bases)

    def get(self, post_ids: Sequence[str]) -> list[Post]:
        if not post_ids:
            return []
        with self._lock:
            records = self._s.retrieve(
                [point_id(p) for p in post_ids], with_payload=True, with_vector=False
            )
        by_id = {str(r.id): r.payload for r in records if r.payload}
        found = [by_id.get(point_id(p)) for p in post_ids]
        return [schema.post_from_payload(p) for p in found if p is not None]

    def count(self) -> int:
        with self._lock:
            return int(self._s.count(q.CountRequest(exact=True)))

    def summary(self) -> StoreSummary:
        with self._lock:
            total = int(self._s.count(q.CountRequest(exact=True)))
            facets = self._s.facet(q.FacetRequest("source", limit=_MAX_SOURCES, exact=True))
            oldest = self._edge_created(q.Direction.Asc)
            newest = self._edge_created(q.Direction.Desc)
        return StoreSummary(
            total=total,
            by_source={str(h.value): int(h.count) for h in facets.hits},
            oldest=oldest,
            newest=newest,
        )

    def _edge_created(self, direction: q.Direction) -> datetime | None:
        records, _ = self._s.scroll(
            q.ScrollRequest(
                limit=1,
                order_by=q.OrderBy(schema.CREATED_AT, direction=direction),
                with_payload=[schema.CREATED_AT],
            )
        )
        if not records or not records[0].payload:
            return None
        return datetime.fromisoformat(str(records[0].payload[schema.CREATED_AT]))

    def optimize(self) -> bool:
        """Merge segments and build the HNSW index (blocking). True if anything changed."""
        with self._lock:
            return bool(self._s.optimize())

    def close(self) -> None:
        with self._lock:
            if self._shard is not None:
                self._shard.flush()
                self._shard.close()
                self._shard = None

    def __enter__(self) -> EdgeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- translation of the neutral plan to qdrant_edge objects --------------------------------


def _filter(spec: FilterSpec) -> q.Filter | None:
    if spec.empty:
        return None
    must: list[Any] = []
    if spec.created_gte or spec.created_lte:
        must.append(
            q.FieldCondition(
                schema.CREATED_AT,
                range=q.RangeDateTime(
                    gte=schema.rfc3339(spec.created_gte) if spec.created_gte else None,
                    lte=schema.rfc3339(spec.created_lte) if spec.created_lte else None,
                ),
            )
        )
    if spec.authors:
        who = list(spec.authors)
        must.append(
            q.Filter(
                should=[
                    q.FieldCondition("author", match=q.MatchAny(who)),
                    q.FieldCondition("author_id", match=q.MatchAny(who)),
                ]
            )
        )
    if spec.hashtags:
        must.append(q.FieldCondition("hashtags", match=q.MatchAny(list(spec.hashtags))))
    if spec.langs:
        must.append(q.FieldCondition("lang", match=q.MatchAny(list(spec.langs))))
    return q.Filter(must=must)


def _params(plan: QueryPlan, kind: str) -> q.SearchParams | None:
    """HNSW beam width for a dense search (sparse vectors have no HNSW)."""
    if kind == "dense" and plan.hnsw_ef is not None:
        return q.SearchParams(hnsw_ef=plan.hnsw_ef)
    return None


def _nearest(plan: QueryPlan, kind: str) -> q.Query:
    if kind == "dense":
        return q.Query.Nearest(plan.dense, using=schema.DENSE)
    return q.Query.Nearest(
        q.SparseVector(plan.sparse_indices, plan.sparse_values), using=schema.SPARSE
    )


def _base_request(plan: QueryPlan, kind: str) -> q.QueryRequest:
    return q.QueryRequest(
        limit=plan.candidates,
        query=_nearest(plan, kind),
        filter=_filter(plan.filter),
        with_payload=False,
        with_vector=False,
        params=_params(plan, kind),
    )


def _undecayed(plan: QueryPlan) -> tuple[Any, list[q.Prefetch]]:
    """The query (and its prefetches) before recency: one vector search, or a fusion."""
    flt = _filter(plan.filter)
    if plan.mode != "hybrid":
        return _nearest(plan, plan.mode), []
    fusion = q.Fusion.Rrf(k=plan.rrf_k) if plan.fusion == "rrf" else q.Fusion.Dbsf()
    prefetches = [
        q.Prefetch(
            limit=plan.candidates,
            query=_nearest(plan, kind),
            filter=flt,
            params=_params(plan, kind),
        )
        for kind in plan.base_modes
    ]
    return fusion, prefetches


def _final_request(plan: QueryPlan) -> q.QueryRequest:
    flt = _filter(plan.filter)
    query, prefetches = _undecayed(plan)
    if plan.decay is not None:
        inner = q.Prefetch(
            limit=plan.candidates,
            query=query,
            prefetches=prefetches or None,
            filter=flt,
            params=_params(plan, plan.mode) if not prefetches else None,
        )
        decay = q.Expression.Decay(
            q.DecayKind.Exp,
            q.Expression.DatetimeKey(schema.CREATED_AT),
            target=q.Expression.Datetime(plan.decay.target_rfc3339),
            midpoint=0.5,
            scale=plan.decay.half_life_s,
        )
        floor = plan.decay.floor
        boost = q.Expression.Sum(
            [
                q.Expression.Constant(floor),
                q.Expression.Mult([q.Expression.Constant(1 - floor), decay]),
            ]
        )
        query = q.Formula(q.Expression.Mult([q.Expression.Variable("$score"), boost]))
        prefetches = [inner]
    return q.QueryRequest(
        limit=plan.limit + TIE_MARGIN,
        query=query,
        prefetches=prefetches or None,
        filter=flt,
        with_payload=True,
        with_vector=False,
        params=_params(plan, plan.mode) if plan.decay is None else None,
    )
