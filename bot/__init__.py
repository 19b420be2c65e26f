"""Conversations and their surfaces (Discord, web). Imports retrieval and inference; nothing imports it."""
