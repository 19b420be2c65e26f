"""Streams public posts from feeds onto a durable bus and indexes them."""
