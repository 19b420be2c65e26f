"""Conversations and their surfaces (terminal, Discord, web).

Imports retrieval and inference; nothing imports bot.
"""
