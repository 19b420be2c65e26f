"""A conversation exported as Markdown (the selected line) or JSON (the whole tree)."""

from __future__ import annotations

from typing import Any

from bot.models import ConversationInfo, Message


def to_json(
    info: ConversationInfo, messages: dict[str, Message], path: list[Message]
) -> dict[str, Any]:
    """Everything: info, every message version (with its parent), and the selected line's ids."""
    ordered = sorted(messages.values(), key=lambda m: (m.created_at, m.id))
    return {
        "conversation": info.model_dump(mode="json"),
        "selected": [m.id for m in path],
        "messages": [m.model_dump(mode="json", exclude={"sent"}) for m in ordered],
    }


def to_markdown(info: ConversationInfo, path: list[Message], versions: dict[str, int]) -> str:
    """The selected line as Markdown, each answer followed by the posts it cited.

    `versions` maps a message id to how many versions its place has (shown when more than one).
    """
    lines = [
        f"# {info.title}",
        "",
        f"_conversation {info.id} · {info.created_at:%Y-%m-%d %H:%M} UTC_",
        "",
    ]
    asked: Message | None = None
    for m in path:
        count = versions.get(m.id, 1)
        mark = f" (one of {count} versions)" if count > 1 else ""
        if m.role == "user":
            asked = m
            lines += [f"**You**{mark}: {m.content}", ""]
            continue
        lines += [f"**{m.persona or 'quip'}**{mark}: {m.content}", ""]
        if m.feed_unavailable:
            lines += ["_(the live feed was unreachable: no fresh posts behind this answer)_", ""]
        if asked is not None and m.cited:
            by_number = {s.number: s for s in asked.context}
            for n in m.cited:
                if n in by_number:
                    post = by_number[n].post
                    who = f"@{post.author}" if post.author else "unknown"
                    where = f" <{post.url}>" if post.url else ""
                    lines.append(f"- [{n}] {who}, {post.created_at:%Y-%m-%d %H:%M}{where}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
