"""Turns chat messages into streamed tokens. Knows nothing of posts or personas."""
