"""Bluesky posts from a Jetstream v1 websocket (`jetstream:wss://host/subscribe?…`).

Spec query keys read here (all repeatable, all optional): `lang` (keep posts whose
`langs` include this primary language), `keyword` (keep posts whose text or hashtags
contain it, case-insensitive), `did` (sent upstream as `wantedDids`), `compress=true`
(zstd with Jetstream's dictionary). Other query keys go to the server unchanged.

The cursor is the largest `time_us` seen (Jetstream's `time_us` is not monotonic); a
resume asks for `cursor - rewind_s`, so redelivery within the rewind is expected and
absorbed by the store's idempotent point ids.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
import zstandard

from ingest.changes import Change, Delete, Upsert
from ingest.sources import RawEvent, SourceSpecError
from ingest.sources.backoff import Backoff
from ingest.sources.payload import get_dict, get_str, load_json_object, parse_time
from ingest.sources.post_build import build_post, compact_raw, primary_lang
from retrieval.post import PostRejected

logger = logging.getLogger(__name__)

POST_COLLECTION = "app.bsky.feed.post"
_OWN_KEYS = {"lang", "keyword", "did", "compress", "cursor", "wantedCollections", "wantedDids"}
_TIME_US = re.compile(r'"time_us"\s*:\s*(\d+)')
_RAW_DROP = {"thumb", "image", "video", "aspectRatio", "captions", "ref", "mimeType", "size"}
_MAX_HANDLES = 100_000
# Real Jetstream messages are a few KB; the cap only guards against a hostile server.
_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def _zstd_decompressor() -> zstandard.ZstdDecompressor:
    data = resources.files("ingest.sources").joinpath("jetstream_zstd_dictionary.bin").read_bytes()
    return zstandard.ZstdDecompressor(dict_data=zstandard.ZstdCompressionDict(data))


class JetstreamSource:
    """A Jetstream v1 subscription to `app.bsky.feed.post`, filtered client-side."""

    finite = False

    def __init__(
        self,
        spec: str,
        *,
        rewind_s: float = 5.0,
        backoff: Backoff | None = None,
        open_timeout_s: float = 10.0,
    ) -> None:
        self._spec = spec
        url = spec.removeprefix("jetstream:")
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise SourceSpecError(
                f"jetstream spec needs a ws:// or wss:// URL, e.g. "
                f"jetstream:wss://jetstream2.us-east.bsky.network/subscribe; got {spec!r}"
            )
        query = parse_qsl(parts.query, keep_blank_values=False)
        self.langs = {lang for k, v in query if k == "lang" and (lang := primary_lang(v))}
        if any(k == "lang" for k, _ in query) and not self.langs:
            raise SourceSpecError(f"jetstream spec has no usable lang= value: {spec!r}")
        self.keywords = [v.lower() for k, v in query if k == "keyword" and v.strip()]
        self.dids = [v for k, v in query if k == "did"]
        if any(not d.startswith("did:") for d in self.dids):
            raise SourceSpecError(f"jetstream did= values must start with 'did:': {spec!r}")
        compress = [v.lower() for k, v in query if k == "compress"]
        if any(v not in ("true", "false", "1", "0") for v in compress):
            raise SourceSpecError(f"jetstream compress= must be true or false: {spec!r}")
        self.compress = bool(compress) and compress[-1] in ("true", "1")
        self._passthrough = [(k, v) for k, v in query if k not in _OWN_KEYS]
        self._base = parts._replace(query="", fragment="")
        self.rewind_us = int(rewind_s * 1_000_000)
        self._backoff = backoff or Backoff(initial=0.5, cap=30.0)
        self._open_timeout_s = open_timeout_s
        self._handles: OrderedDict[str, str] = OrderedDict()
        self._dctx = _zstd_decompressor() if self.compress else None

    @property
    def spec(self) -> str:
        return self._spec

    def subscribe_url(self, cursor_us: int | None) -> str:
        """The websocket URL for a connection that starts at `cursor_us` (None: live)."""
        query: list[tuple[str, str]] = [("wantedCollections", POST_COLLECTION)]
        query += [("wantedDids", d) for d in self.dids]
        query += self._passthrough
        if cursor_us is not None:
            query.append(("cursor", str(max(0, cursor_us))))
        if self.compress:
            query.append(("compress", "true"))
        return urlunsplit(self._base._replace(query=urlencode(query)))

    def _decode(self, message: str | bytes) -> str | bytes:
        if isinstance(message, bytes) and self._dctx is not None:
            try:
                return self._dctx.decompressobj().decompress(message)
            except zstandard.ZstdError:
                return message  # normalise rejects it as undecodable
        return message

    async def events(self, cursor: str | None) -> AsyncIterator[RawEvent]:
        """Events from `cursor` (a `time_us`; None = live), reconnecting forever."""
        best: int | None = None
        if cursor:
            try:
                best = int(cursor)
            except ValueError:
                logger.warning(
                    "jetstream cursor unusable, starting live",
                    extra={"source": self._spec, "cursor": cursor},
                )
        backoff = self._backoff
        while True:
            start = None if best is None else best - self.rewind_us
            url = self.subscribe_url(start)
            error: str | None = None
            try:
                async with websockets.connect(
                    url,
                    open_timeout=self._open_timeout_s,
                    max_size=_MAX_MESSAGE_BYTES,
                    compression=None,
                    close_timeout=2.0,
                ) as ws:
                    logger.info(
                        "jetstream connected",
                        extra={"source": self._spec, "url": url, "cursor": start},
                    )
                    try:
                        async for message in ws:
                            # Only a connection that delivers counts as recovered; one that
                            # is accepted and then cut at once keeps backing off.
                            backoff.reset()
                            payload = self._decode(message)
                            head = (
                                payload[:400]
                                if isinstance(payload, str)
                                else payload[:400].decode("utf-8", "replace")
                            )
                            if (found := _TIME_US.search(head)) is not None:
                                t = int(found.group(1))
                                if best is None or t > best:
                                    best = t
                            yield RawEvent(
                                payload=payload, cursor=None if best is None else str(best)
                            )
                    except (GeneratorExit, asyncio.CancelledError):
                        # The consumer is gone: skip the close handshake, which can stall
                        # for close_timeout while unread messages fill the receive buffer.
                        if ws.transport is not None:
                            ws.transport.abort()
                        raise
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
            delay = backoff.next_delay()
            logger.info(
                "jetstream reconnecting",
                extra={
                    "source": self._spec,
                    "error": error or "server closed the stream",
                    "attempt": backoff.attempts,
                    "delay_s": round(delay, 3),
                    "cursor": best,
                },
            )
            await asyncio.sleep(delay)

    def normalise(self, event: RawEvent) -> list[Change]:
        obj = load_json_object(event.payload)
        did = get_str(obj, "did", required=True)
        assert did is not None
        if not did.startswith("did:") or "/" in did:
            raise PostRejected("invalid_field", f"did={did[:80]!r}")
        kind = obj.get("kind")
        if kind == "commit":
            return self._commit(did, get_dict(obj, "commit", required=True), obj)
        if kind == "identity":
            handle = get_dict(obj, "identity", required=True).get("handle")
            if isinstance(handle, str) and handle:
                self._remember_handle(did, handle)
            return []
        if kind == "account":
            account = get_dict(obj, "account", required=True)
            if account.get("active") is False:
                self._handles.pop(did, None)
                return [Delete(author_id=did)]
            return []
        raise PostRejected("unknown_event_kind", f"kind={str(kind)[:40]!r}")

    def _remember_handle(self, did: str, handle: str) -> None:
        self._handles[did] = handle
        self._handles.move_to_end(did)
        while len(self._handles) > _MAX_HANDLES:
            self._handles.popitem(last=False)

    def _commit(self, did: str, commit: dict[str, Any], obj: dict[str, Any]) -> list[Change]:
        collection = get_str(commit, "collection", required=True)
        operation = get_str(commit, "operation", required=True)
        if collection != POST_COLLECTION:
            return []
        rkey = get_str(commit, "rkey", required=True)
        assert rkey is not None
        if not rkey or "/" in rkey or len(rkey) > 512:
            raise PostRejected("invalid_field", f"rkey={rkey[:80]!r}")
        uri = f"at://{did}/{POST_COLLECTION}/{rkey}"
        if operation == "delete":
            return [Delete(post_id=uri)]
        if operation not in ("create", "update"):
            raise PostRejected("unknown_event_kind", f"operation={str(operation)[:40]!r}")
        record = get_dict(commit, "record", required=True)
        text = get_str(record, "text", required=True)
        assert text is not None
        created_at = parse_time(record.get("createdAt"), "createdAt")
        langs = [p for tag in _str_list(record.get("langs")) if (p := primary_lang(tag))]
        if self.langs and not self.langs.intersection(langs):
            return []
        links, mentions, hashtags = _facets(text, record.get("facets"))
        hashtags += _str_list(record.get("tags"))
        quote_of, embed_links = _embed(record.get("embed"))
        links += embed_links
        if self.keywords:
            haystack = " ".join([text, *hashtags]).lower()
            if not any(k in haystack for k in self.keywords):
                return []
        reply = get_dict(record, "reply")
        handle = self._handles.get(did)
        post = build_post(
            id=uri,
            source="jetstream",
            platform="bluesky",
            author=handle,
            author_id=did,
            text=text,
            created_at=created_at,
            lang=langs[0] if langs else None,
            url=f"https://bsky.app/profile/{handle or did}/post/{rkey}",
            reply_to=get_str(get_dict(reply, "parent"), "uri"),
            thread_root=get_str(get_dict(reply, "root"), "uri"),
            quote_of=quote_of,
            hashtags=hashtags,
            mentions=list(dict.fromkeys(mentions)),
            links=list(dict.fromkeys(links)),
            raw=compact_raw(obj, drop=_RAW_DROP),
        )
        return [Upsert(post)]


def _str_list(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _facets(text: str, facets: object) -> tuple[list[str], list[str], list[str]]:
    """Links, mentions and tags from rich-text facets. Indices are UTF-8 byte offsets;
    a mention's visible `@handle` is read from the text at those offsets."""
    links: list[str] = []
    mentions: list[str] = []
    tags: list[str] = []
    if not isinstance(facets, list):
        return links, mentions, tags
    encoded = text.encode("utf-8", "surrogatepass")
    for facet in facets:
        if not isinstance(facet, dict) or not isinstance(facet.get("features"), list):
            continue
        index = facet.get("index")
        span = ""
        if isinstance(index, dict):
            start, end = index.get("byteStart"), index.get("byteEnd")
            if isinstance(start, int) and isinstance(end, int) and 0 <= start < end:
                span = encoded[start:end].decode("utf-8", "ignore")
        for feature in facet["features"]:
            if not isinstance(feature, dict):
                continue
            kind = feature.get("$type")
            if kind == "app.bsky.richtext.facet#link" and isinstance(feature.get("uri"), str):
                links.append(feature["uri"])
            elif kind == "app.bsky.richtext.facet#mention":
                handle = span.strip().lstrip("@")
                if handle and "." in handle and " " not in handle:
                    mentions.append(handle)
                elif isinstance(feature.get("did"), str):
                    mentions.append(feature["did"])
            elif kind == "app.bsky.richtext.facet#tag" and isinstance(feature.get("tag"), str):
                tags.append(feature["tag"])
    return links, mentions, tags


def _embed(embed: object) -> tuple[str | None, list[str]]:
    """The quoted post's URI (if any) and the external links of an embed."""
    if not isinstance(embed, dict):
        return None, []
    kind = embed.get("$type")
    links: list[str] = []
    quote: str | None = None
    if kind == "app.bsky.embed.external":
        uri = get_dict(embed, "external").get("uri")
        if isinstance(uri, str):
            links.append(uri)
    elif kind == "app.bsky.embed.record":
        quote = get_str(get_dict(embed, "record"), "uri")
    elif kind == "app.bsky.embed.recordWithMedia":
        quote = get_str(get_dict(get_dict(embed, "record"), "record"), "uri")
        _, links = _embed(embed.get("media"))
    return quote, links
