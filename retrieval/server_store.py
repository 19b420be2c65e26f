"""`PostStore` on a Qdrant server (or cluster) via qdrant-client: same schema, same query plan.

`url=":memory:"` runs qdrant-client's local mode in-process: it implements the same query API
(fusion, formula decay, filters) in Python, and is how this backend is tested where no
server runs. It is far slower than Qdrant Edge; never a default.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from qdrant_client import QdrantClient
from qdrant_client import models as m
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

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

_MAX_SOURCES = 1_000


def stored_dim(url: str, api_key: str | None, collection: str, timeout: float = 10.0) -> int | None:
    """The dense vector width of `collection`, None when it does not exist yet; raises
    `StoreUnavailable` when the server does not answer."""
    try:
        client = QdrantClient(url=url, api_key=api_key, timeout=int(timeout))
        try:
            if not client.collection_exists(collection):
                return None
            vectors = client.get_collection(collection).config.params.vectors
        finally:
            client.close()
    except Exception as exc:
        raise StoreUnavailable(
            f"cannot use Qdrant at {_without_credentials(url)} ({collection}): {exc}"
        ) from exc
    if not isinstance(vectors, dict) or schema.DENSE not in vectors:
        raise StoreUnavailable(f"collection {collection!r} has no {schema.DENSE!r} vectors")
    return int(vectors[schema.DENSE].size)


class ServerStore:
    """Posts in collection `collection` of the Qdrant at `url` (created with the schema if
    missing). Writes wait for the server to apply them (`wait=True`). Raises
    `StoreUnavailable` when the server cannot be reached or the collection has another size,
    and from any call when the server is unreachable, times out, or answers 5xx or 429
    (callers may retry those; other errors are bugs in the request).
    """

    def __init__(
        self,
        url: str,
        api_key: str | None,
        collection: str,
        dim: int,
        *,
        fusion: Fusion = DEFAULT_FUSION,
        timeout: float = 10.0,
    ) -> None:
        self.collection = collection
        self.dim = dim
        self._shown_url = _without_credentials(url)  # for messages: no password in logs
        self.fusion: Fusion = fusion
        self._lock = threading.Lock()
        try:
            if url == ":memory:":
                self._client = QdrantClient(location=":memory:")
            else:
                self._client = QdrantClient(url=url, api_key=api_key, timeout=int(timeout))
            self._ensure_collection()
        except StoreUnavailable:
            raise
        except Exception as exc:
            raise StoreUnavailable(
                f"cannot use Qdrant at {_without_credentials(url)} ({collection}): {exc}"
            ) from exc

    @contextlib.contextmanager
    def _calling(self) -> Iterator[None]:
        """Hold the client (one call at a time) and turn "the server is not there" into
        `StoreUnavailable`, the one error the indexer and health probe need to recognise."""
        where = f"Qdrant at {self._shown_url}"
        with self._lock:
            try:
                yield
            except ResponseHandlingException as exc:
                if not isinstance(exc.source, httpx.TransportError):  # a reply we cannot parse
                    raise
                raise StoreUnavailable(f"{where} unreachable: {exc.source!r}") from exc
            except ResourceExhaustedResponse as exc:
                raise StoreUnavailable(f"{where} is rate limiting: {exc}") from exc
            except UnexpectedResponse as exc:
                if exc.status_code is None or (exc.status_code < 500 and exc.status_code != 429):
                    raise
                raise StoreUnavailable(
                    f"{where} answered {exc.status_code}: {exc.content[:200]!r}"
                ) from exc

    def _ensure_collection(self) -> None:
        c = self._client
        if c.collection_exists(self.collection):
            info = c.get_collection(self.collection)
            vectors = info.config.params.vectors
            size = vectors[schema.DENSE].size if isinstance(vectors, dict) else None
            if size != self.dim:
                raise StoreUnavailable(
                    f"collection {self.collection!r} holds {size}-dim vectors, "
                    f"this embedder makes {self.dim}"
                )
            return
        c.create_collection(
            self.collection,
            vectors_config={
                schema.DENSE: m.VectorParams(size=self.dim, distance=m.Distance.COSINE)
            },
            sparse_vectors_config={schema.SPARSE: m.SparseVectorParams(modifier=m.Modifier.IDF)},
        )
        with warnings.catch_warnings():
            # Local mode (":memory:") has no payload indexes and warns; a server builds them.
            warnings.simplefilter("ignore", UserWarning)
            self._create_indexes()

    def _create_indexes(self) -> None:
        c = self._client
        for name in schema.DATETIME_FIELDS:
            c.create_payload_index(self.collection, name, m.PayloadSchemaType.DATETIME)
        for name in schema.KEYWORD_FIELDS:
            c.create_payload_index(self.collection, name, m.PayloadSchemaType.KEYWORD)
        for name in schema.FLOAT_FIELDS:
            c.create_payload_index(self.collection, name, m.PayloadSchemaType.FLOAT)

    # --- writes -------------------------------------------------------------------------

    def upsert(self, posts: Sequence[Post], dense: Sequence[Sequence[float]]) -> None:
        if len(posts) != len(dense):
            raise ValueError(f"{len(posts)} posts but {len(dense)} vectors")
        if not posts:
            return
        points = []
        for post, vector in zip(posts, dense, strict=True):
            if len(vector) != self.dim:
                raise ValueError(
                    f"vector for {post.id} has {len(vector)} dims, store has {self.dim}"
                )
            indices, values = schema.sparse_document(post)
            points.append(
                m.PointStruct(
                    id=point_id(post.id),
                    vector={
                        schema.DENSE: [float(x) for x in vector],
                        schema.SPARSE: m.SparseVector(indices=indices, values=values),
                    },
                    payload=schema.post_payload(post),
                )
            )
        with self._calling():
            self._client.upsert(self.collection, points=points, wait=True)

    def sync(self) -> None:
        """Nothing to do here: writes return once the server has applied them (`wait=True`);
        its own WAL and flush settings decide what a power loss on the server can undo."""

    def delete(self, post_ids: Sequence[str]) -> None:
        if not post_ids:
            return
        with self._calling():
            self._client.delete(
                self.collection,
                points_selector=m.PointIdsList(points=[point_id(p) for p in post_ids]),
                wait=True,
            )

    def delete_where(
        self,
        *,
        native_id: str | None = None,
        author_id: str | None = None,
        created_before: datetime | None = None,
    ) -> None:
        must: list[Any] = []
        if native_id is not None:
            must.append(m.FieldCondition(key="native_id", match=m.MatchValue(value=native_id)))
        if author_id is not None:
            must.append(m.FieldCondition(key="author_id", match=m.MatchValue(value=author_id)))
        if created_before is not None:
            must.append(
                m.FieldCondition(
                    key=schema.CREATED_AT,
                    range=m.DatetimeRange(lt=created_before),
                )
            )
        if not must:
            raise ValueError("delete_where needs at least one condition")
        with self._calling():
            self._client.delete(
                self.collection,
                points_selector=m.FilterSelector(filter=m.Filter(must=must)),
                wait=True,
            )

    # --- reads --------------------------------------------------------------------------

    def query(self, request: StoreQuery) -> list[Hit]:
        plan = plan_query(request, self.dim, self.fusion)
        requests = [_final_request(plan)] + [_base_request(plan, k) for k in plan.base_modes]
        with self._calling():
            results = self._client.query_batch_points(self.collection, requests=requests)
        final = [(str(p.id), p.score, p.payload or {}) for p in results[0].points]
        bases: dict[str, dict[str, float]] = {
            kind: {str(p.id): p.score for p in res.points}
            for kind, res in zip(plan.base_modes, results[1:], strict=True)
        }
        return explain(plan, final, bases)

    def get(self, post_ids: Sequence[str]) -> list[Post]:
        if not post_ids:
            return []
        with self._calling():
            records = self._client.retrieve(
                self.collection,
                ids=[point_id(p) for p in post_ids],
                with_payload=True,
                with_vectors=False,
            )
        by_id = {str(r.id): r.payload for r in records if r.payload}
        found = [by_id.get(point_id(p)) for p in post_ids]
        return [schema.post_from_payload(p) for p in found if p is not None]

    def count(self) -> int:
        with self._calling():
            return int(self._client.count(self.collection, exact=True).count)

    def summary(self) -> StoreSummary:
        with self._calling():
            total = int(self._client.count(self.collection, exact=True).count)
            facets = self._client.facet(
                self.collection, key="source", limit=_MAX_SOURCES, exact=True
            )
            oldest = self._created(m.Direction.ASC)
            newest = self._created(m.Direction.DESC)
        return StoreSummary(
            total=total,
            by_source={str(h.value): int(h.count) for h in facets.hits},
            oldest=oldest,
            newest=newest,
        )

    def _created(self, direction: m.Direction) -> datetime | None:
        records, _ = self._client.scroll(
            self.collection,
            limit=1,
            order_by=m.OrderBy(key=schema.CREATED_AT, direction=direction),
            with_payload=[schema.CREATED_AT],
        )
        if not records or not records[0].payload:
            return None
        return datetime.fromisoformat(str(records[0].payload[schema.CREATED_AT]))

    def close(self) -> None:
        with self._calling():
            self._client.close()


def _without_credentials(url: str) -> str:
    """`url` fit for a message: a user and password in it (http://user:pw@host) are dropped."""
    try:
        parts = urlsplit(url)
        if parts.username is None and parts.password is None:
            return url
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:  # not a URL we can take apart: say nothing of it
        return "(the configured URL)"


# --- translation of the neutral plan to qdrant-client models --------------------------------


def _filter(spec: FilterSpec) -> m.Filter | None:
    if spec.empty:
        return None
    must: list[Any] = []
    if spec.created_gte or spec.created_lte:
        must.append(
            m.FieldCondition(
                key=schema.CREATED_AT,
                range=m.DatetimeRange(gte=spec.created_gte, lte=spec.created_lte),
            )
        )
    if spec.authors:
        who = list(spec.authors)
        must.append(
            m.Filter(
                should=[
                    m.FieldCondition(key="author", match=m.MatchAny(any=who)),
                    m.FieldCondition(key="author_id", match=m.MatchAny(any=who)),
                ]
            )
        )
    if spec.hashtags:
        must.append(m.FieldCondition(key="hashtags", match=m.MatchAny(any=list(spec.hashtags))))
    if spec.langs:
        must.append(m.FieldCondition(key="lang", match=m.MatchAny(any=list(spec.langs))))
    return m.Filter(must=must)


def _nearest(plan: QueryPlan, kind: str) -> Any:
    if kind == "dense":
        return plan.dense
    return m.SparseVector(indices=plan.sparse_indices, values=plan.sparse_values)


def _using(kind: str) -> str:
    return schema.DENSE if kind == "dense" else schema.SPARSE


def _params(plan: QueryPlan, kind: str) -> m.SearchParams | None:
    if kind == "dense" and plan.hnsw_ef is not None:
        return m.SearchParams(hnsw_ef=plan.hnsw_ef)
    return None


def _base_request(plan: QueryPlan, kind: str) -> m.QueryRequest:
    return m.QueryRequest(
        query=_nearest(plan, kind),
        using=_using(kind),
        limit=plan.candidates,
        filter=_filter(plan.filter),
        with_payload=False,
        with_vector=False,
        params=_params(plan, kind),
    )


def _final_request(plan: QueryPlan) -> m.QueryRequest:
    flt = _filter(plan.filter)
    query: Any
    using: str | None = None
    prefetch: list[m.Prefetch] | None = None
    if plan.mode != "hybrid":
        query, using = _nearest(plan, plan.mode), _using(plan.mode)
    else:
        query = (
            m.RrfQuery(rrf=m.Rrf(k=plan.rrf_k))
            if plan.fusion == "rrf"
            else m.FusionQuery(fusion=m.Fusion.DBSF)
        )
        prefetch = [
            m.Prefetch(
                query=_nearest(plan, k),
                using=_using(k),
                limit=plan.candidates,
                filter=flt,
                params=_params(plan, k),
            )
            for k in plan.base_modes
        ]
    if plan.decay is not None:
        inner = m.Prefetch(
            query=query,
            using=using,
            prefetch=prefetch,
            limit=plan.candidates,
            filter=flt,
            params=_params(plan, plan.mode) if prefetch is None else None,
        )
        decay = m.ExpDecayExpression(
            exp_decay=m.DecayParamsExpression(
                x=m.DatetimeKeyExpression(datetime_key=schema.CREATED_AT),
                target=m.DatetimeExpression(datetime=plan.decay.target_rfc3339),
                scale=plan.decay.half_life_s,
                midpoint=0.5,
            )
        )
        floor = plan.decay.floor
        boost = m.SumExpression(sum=[floor, m.MultExpression(mult=[1 - floor, decay])])
        query = m.FormulaQuery(formula=m.MultExpression(mult=["$score", boost]))
        using, prefetch = None, [inner]
    return m.QueryRequest(
        query=query,
        using=using,
        prefetch=prefetch,
        limit=plan.limit + TIE_MARGIN,
        filter=flt,
        with_payload=True,
        with_vector=False,
        params=_params(plan, plan.mode) if plan.decay is None else None,
    )
