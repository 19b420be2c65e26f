"""Launch profiles turn into SGLang commands with flags SGLang knows."""

from __future__ import annotations

import re
import subprocess

import pytest

from inference.launch import load_profile, profile_names, router_command, server_command

# Flags checked against SGLang's server_args.py (and the Grok-2 model card).
KNOWN_SGLANG_FLAGS = {
    "--model-path",
    "--host",
    "--port",
    "--tokenizer-path",
    "--tp-size",
    "--ep-size",
    "--dp-size",
    "--quantization",
    "--attention-backend",
    "--mem-fraction-static",
    "--context-length",
    "--enable-metrics",
    "--enable-cache-report",
}


def test_the_issue_profiles_are_bundled() -> None:
    names = profile_names()
    assert {"qwen3-30b-a3b-1gpu", "grok-2-tp8", "qwen3-30b-a3b-dp-router"} <= set(names)


@pytest.mark.parametrize("name", profile_names())
def test_every_profile_uses_only_known_flags_and_states_its_memory(name: str) -> None:
    profile = load_profile(name)
    argv = server_command(profile, port=31000)
    assert argv[:3] == ["python3", "-m", "sglang.launch_server"]
    assert {a for a in argv if a.startswith("--")} <= KNOWN_SGLANG_FLAGS
    assert profile.gpu_memory_gb > 0 and profile.memory_note


def test_grok_2_profile_follows_the_model_card() -> None:
    argv = " ".join(server_command(load_profile("grok-2-tp8")))
    for part in (
        "--tp-size 8",
        "--quantization fp8",
        "--attention-backend triton",
        "--tokenizer-path /models/grok-2/tokenizer.tok.json",
    ):
        assert part in argv


def test_data_parallel_profile_puts_workers_behind_a_cache_aware_router() -> None:
    profile = load_profile("qwen3-30b-a3b-dp-router")
    argv = router_command(profile, ["http://a:1", "http://b:2"], port=30000)
    assert argv[:2] == ["smg", "launch"]
    assert argv[argv.index("--policy") + 1] == "cache_aware"
    assert "--tp-size" in server_command(profile)  # workers use the one-GPU profile


def test_router_profile_uses_only_flags_the_installed_smg_accepts(require_smg: list[str]) -> None:
    help_text = subprocess.run(
        [*require_smg, "launch", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    accepted = set(re.findall(r"--[a-z0-9-]+", help_text))
    argv = router_command(load_profile("qwen3-30b-a3b-dp-router"), ["http://a:1"])
    assert {a for a in argv if a.startswith("--")} <= accepted


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="grok-2-tp8"):
        load_profile("nope")
