"""Prompt layout for prefix caching (SGLang's RadixAttention, the local prefix cache).

A server reuses the KV state of the longest token prefix it has seen before. So a conversation's
prompt puts what does not change first — system prompt, persona, earlier turns *exactly as they
were sent* — and what is new each turn last (fresh context, the new question). Then turn N+1's
prompt starts with turn N's prompt plus its reply, byte for byte.

`shared_prefix_ratio` measures how well a layout does; `fit_to_window` trims history when a
prompt is too long without breaking that property more often than needed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from inference.errors import InvalidRequest
from inference.messages import ChatMessage, PromptReport


def turn_messages(
    system: str,
    history: Sequence[ChatMessage],
    question: str,
    *,
    fresh_context: str = "",
) -> list[ChatMessage]:
    """Messages for one turn, laid out for prefix reuse.

    `system` must be the same string every turn (put anything stable there: persona, rules).
    `history` is earlier turns as they were sent (including their fresh context), so the previous
    prompt stays a prefix. `fresh_context` (material new this turn) goes in the final user message,
    before the question.
    """
    content = f"{fresh_context}\n\n{question}" if fresh_context else question
    return [
        ChatMessage(role="system", content=system),
        *history,
        ChatMessage(role="user", content=content),
    ]


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens `a` and `b` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def shared_prefix_ratio(previous: Sequence[int], current: Sequence[int]) -> float:
    """Fraction of `current`'s tokens that a prefix cache holding `previous` could reuse."""
    if not current:
        return 0.0
    return common_prefix_length(previous, current) / len(current)


def conversation_prefix_ratios(prompts: Sequence[Sequence[int]]) -> list[float]:
    """For turns 2..N of a conversation (tokenised prompts; append the previous reply to a prompt
    if the server's cache would hold it), the ratio each turn shares with the one before."""
    return [shared_prefix_ratio(prompts[i - 1], prompts[i]) for i in range(1, len(prompts))]


def fit_to_window(
    messages: Sequence[ChatMessage],
    count_tokens: Callable[[Sequence[ChatMessage]], int],
    budget: int,
    *,
    low_water: float = 0.75,
) -> tuple[list[ChatMessage], PromptReport]:
    """Drop the oldest history until the prompt fits `budget` tokens.

    Leading system messages and the final message (the question) are never dropped or cut.
    When dropping is needed, it goes down to `low_water * budget`: dropping a little more at once
    keeps the new, shorter prefix stable for the next few turns instead of shifting it every turn
    (each shift is a full prefix-cache miss). Raises `InvalidRequest` if even system + question
    do not fit.
    """
    msgs = list(messages)
    if count_tokens(msgs) <= budget:
        return msgs, PromptReport()
    n_system = 0
    while n_system < len(msgs) - 1 and msgs[n_system].role == "system":
        n_system += 1
    head, middle, last = msgs[:n_system], msgs[n_system:-1], msgs[-1]
    target = max(1, int(budget * low_water))
    dropped = 0
    while middle:
        # Drop a user+assistant pair together so the history still alternates.
        step = (
            2
            if len(middle) >= 2 and middle[0].role == "user" and middle[1].role == "assistant"
            else 1
        )
        middle = middle[step:]
        dropped += step
        if count_tokens([*head, *middle, last]) <= target:
            break
    kept = [*head, *middle, last]
    need = count_tokens(kept)
    if need > budget:
        raise InvalidRequest(
            f"prompt too long: system prompt and question alone take {need} tokens, "
            f"the budget is {budget}"
        )
    return kept, PromptReport(truncated=True, dropped_messages=dropped)
