"""The load simulation measures the real pipeline, and the Grafana dashboard only asks for
metrics the code (or the installed smg gateway) really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.simulate import Limits, simulate, verdict
from ingest.metrics import IngestMetrics
from quipfeed.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/quipfeed.json"


async def test_simulation_measures_every_stage_of_two_small_steps(tmp_path: Path, minilm) -> None:  # type: ignore[no-untyped-def]
    settings = Settings()
    settings.data_dir = tmp_path
    result = await simulate(
        settings,
        minilm,
        rates=[4, 8],
        step_seconds=1.0,
        query_rate=4,
        limits=Limits(freshness_p99_ms=1e9, query_p99_ms=1e9),
        drain_s=10.0,
        bus_changes=50,
    )
    assert [s["offered_posts_per_s"] for s in result["steps"]] == [4, 8]
    assert result["broke_at_posts_per_s"] is None
    for step in result["steps"]:
        assert step["drained"] and step["indexed"] == step["posts"]
        assert step["achieved_posts_per_s"] > 0
        assert 0 < step["freshness_p50_ms"] <= step["freshness_p99_ms"]
        assert step["stages_p50_ms"]["embed"] > 0 and step["stages_p50_ms"]["write"] > 0
        assert step["stages_p50_ms"]["bus"] >= 0
        # The stages are a split of freshness, so their shares add up to (about) one.
        assert sum(step["stage_share_of_freshness"].values()) == pytest.approx(1.0, abs=0.02)
        assert step["queries"] > 0 and step["query_errors"] == 0
        assert 0 < step["query_p50_ms"] <= step["query_p99_ms"]
        assert step["query_store_mean_ms"] > 0
        assert step["daemon_metrics"]["batches"] > 0
        assert step["cpu_cores_used"]["process"] > 0
    # The shard persists across steps: the second step writes on top of the first.
    assert result["steps"][1]["store_points_after"] == 4 + 8
    bus = result["bus_alone"]
    assert bus["changes"] == 50 and bus["publish_per_s"] > 0 and bus["read_ack_per_s"] > 0

    # The same figures judged against a tight limit break at the first step, and say why.
    broke, why = verdict(result["steps"], Limits(freshness_p99_ms=0.001, query_p99_ms=1e9))
    assert broke == 4
    assert "freshness p99" in why and "CPU" in why


def _exported_quipfeed_names() -> set[str]:
    """Family names the code registers: the ingest daemon's, the web app's and the Discord
    bot's real registries, plus the model server's (declared in inference/server.py, engine
    counters named from a tuple there)."""
    from bot.discord.metrics import DiscordMetrics
    from bot.web.metrics import WebMetrics

    names = {family.name for family in IngestMetrics().registry.collect()}
    names |= {family.name for family in WebMetrics().registry.collect()}
    names |= {family.name for family in DiscordMetrics().registry.collect()}
    server = (ROOT / "inference/server.py").read_text(encoding="utf-8")
    names |= set(re.findall(r'"(quipfeed_[a-z_]+)"', server))
    if 'f"quipfeed_engine_{name}"' in server:
        for group in re.findall(r"for name in \(([^)]*)\)", server):
            names |= {f"quipfeed_engine_{n}" for n in re.findall(r'"([a-z_]+)"', group)}
    return names


def _base(name: str) -> str:
    return re.sub(r"_(bucket|sum|count|total)$", "", name)


def _dashboard_metrics() -> set[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if "expr" in t]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if v.get("definition")]
    return {m for e in exprs for m in re.findall(r"\b((?:quipfeed|smg)_[a-z_]+)", e)}


def test_dashboard_is_valid_json_with_a_prometheus_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"], panel["title"]


def test_every_quipfeed_metric_in_the_dashboard_is_exported_by_the_code() -> None:
    wanted = {m for m in _dashboard_metrics() if m.startswith("quipfeed_")}
    exported = _exported_quipfeed_names()
    assert {"quipfeed_freshness_seconds_bucket", "quipfeed_engine_cached_tokens_total"} <= wanted
    # A counter `x` is scraped as `x_total`, a histogram as `x_bucket`…; a gauge keeps its name.
    missing = sorted(m for m in wanted if m not in exported and _base(m) not in exported)
    assert not missing, f"not exported: {missing}"


def test_every_router_metric_in_the_dashboard_exists_in_the_installed_router() -> None:
    smg = pytest.importorskip("smg")
    binaries = list(Path(smg.__file__).parent.glob("*.so"))
    if not binaries:
        pytest.skip("smg's compiled gateway is not installed")
    blob = b"".join(b.read_bytes() for b in binaries)
    wanted = {m for m in _dashboard_metrics() if m.startswith("smg_")}
    assert wanted
    missing = [
        m for m in sorted(wanted) if _base(m).encode() not in blob and m.encode() not in blob
    ]
    assert not missing, f"not in smg: {missing}"
