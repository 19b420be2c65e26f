"""SGLang launch profiles (data files in `inference/profiles/*.toml`) and the commands they give.

A profile names a model, its GPU count and memory, and SGLang server flags (checked against
SGLang's `server_args.py`: `--model-path`, `--tp-size`, `--ep-size`, `--quantization`,
`--attention-backend`, `--mem-fraction-static`, `--context-length`, `--enable-metrics`,
`--enable-cache-report`). A data-parallel profile adds a router: N workers of another profile
behind SGLang's Model Gateway, `smg launch --policy cache_aware`.
"""

from __future__ import annotations

import tomllib
from importlib import resources

from pydantic import BaseModel, Field


class LaunchProfile(BaseModel):
    """One deployment shape for an SGLang server (or a routed group of them)."""

    name: str
    description: str
    model: str
    tokenizer: str | None = None
    gpus: int = Field(ge=1)
    gpu_memory_gb: int = Field(ge=1)
    memory_note: str
    args: list[str] = Field(default_factory=list)
    worker_profile: str | None = None
    router_args: list[str] = Field(default_factory=list)


def profile_names() -> list[str]:
    """Names of the bundled profiles."""
    folder = resources.files("inference") / "profiles"
    return sorted(
        p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml")
    )


def load_profile(name: str) -> LaunchProfile:
    """A bundled profile by name; `KeyError` listing the names if there is none."""
    if name not in profile_names():
        raise KeyError(f"no launch profile {name!r}; have {', '.join(profile_names())}")
    text = (resources.files("inference") / "profiles" / f"{name}.toml").read_text()
    return LaunchProfile(name=name, **tomllib.loads(text))


def server_command(
    profile: LaunchProfile, *, host: str = "127.0.0.1", port: int = 30000, model: str | None = None
) -> list[str]:
    """argv for one SGLang server of `profile` (for a routed profile: one of its workers)."""
    if profile.worker_profile is not None:
        profile = load_profile(profile.worker_profile)
    return [
        "python3",
        "-m",
        "sglang.launch_server",
        "--model-path",
        model or profile.model,
        "--host",
        host,
        "--port",
        str(port),
        *profile.args,
    ]


def router_command(
    profile: LaunchProfile, worker_urls: list[str], *, host: str = "127.0.0.1", port: int = 30000
) -> list[str]:
    """argv for `smg` (SGLang's Model Gateway) in front of `worker_urls` (a routed profile
    only)."""
    if profile.worker_profile is None:
        raise ValueError(f"profile {profile.name!r} has no router")
    return [
        "smg",
        "launch",
        "--host",
        host,
        "--port",
        str(port),
        "--worker-urls",
        *worker_urls,
        *profile.router_args,
    ]
