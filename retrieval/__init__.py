"""Owns the index: the Post model, the stores, hybrid search, evaluation."""
