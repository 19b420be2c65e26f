"""A one-line progress display for long runs (`--once`), on stderr."""

from __future__ import annotations

import sys
import time

from ingest.daemon import Progress


class ProgressLine:
    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.started = time.monotonic()
        self.shown = False
        self.tty = sys.stderr.isatty()
        self.last_plain = 0.0

    def update(self, p: Progress) -> None:
        if not self.enabled:
            return
        elapsed = max(time.monotonic() - self.started, 1e-6)
        line = (
            f"events {p.events:>8}  indexed {p.indexed:>8} ({p.indexed / elapsed:,.0f}/s)  "
            f"lag {p.lag:>6}  dead {p.dead:>5}  sources done {p.sources_done}/{p.sources}"
        )
        if self.tty:
            sys.stderr.write("\r" + line)
            self.shown = True
        elif time.monotonic() - self.last_plain >= 5:
            # Not a terminal (CI, a pipe): a line every few seconds, not a flood.
            self.last_plain = time.monotonic()
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


class StageProgress:
    """`stage  done/total  rate  ETA` on one line of stderr, for long offline jobs (eval)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.stage = ""
        self.started = time.monotonic()
        self.last = 0.0

    def update(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if stage != self.stage:
            self.stage, self.started = stage, now
        if now - self.last < (0.2 if self.tty else 5) and done < total:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-6)
        eta = (total - done) / rate if rate > 0 else 0
        line = f"{stage:<10} {done:>7}/{total:<7} {rate:8.1f}/s  ETA {eta:5.0f} s"
        sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
        if self.tty and done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty and self.enabled:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()
