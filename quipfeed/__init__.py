"""The composition root: settings and the `quipfeed` command wire the four parts together."""
