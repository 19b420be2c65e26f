"""The monitoring wiring in compose agrees with itself: Prometheus scrapes services that exist,
on the ports those services listen on."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def listening_port(service: dict) -> int | None:
    """The `--port` a quipfeed service's command passes, or None."""
    command = service.get("command")
    if isinstance(command, list) and "--port" in command:
        return int(command[command.index("--port") + 1])
    return None


def metrics_port(service: dict) -> int | None:
    """Where a service serves /metrics: its `--prometheus-port` (the smg gateway, whose API port
    serves none), else its `--port` (quipfeed's own services), else None (not ours to read)."""
    command = service.get("command")
    words = command.split() if isinstance(command, str) else list(command or [])
    if "--prometheus-port" in words:
        return int(words[words.index("--prometheus-port") + 1])
    return listening_port(service)


def test_every_prometheus_target_is_a_compose_service_on_its_port() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    volumes = services["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in volumes
    targets: list[tuple[str, int]] = []
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.append((host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            targets += [(name, int(dns["port"])) for name in dns["names"]]
    assert {host for host, _ in targets} <= set(services), "a target names no compose service"
    for host, port in targets:
        expected = metrics_port(services[host])
        if expected is not None:  # our services and the gateway say it on the command line
            assert port == expected, (host, port, expected)
    # The gateway's metrics port is among them (its API port serves no /metrics).
    assert ("smg", metrics_port(services["smg"])) in targets
    # Every quipfeed service that serves metrics is scraped.
    scraped = {host for host, _ in targets}
    for name, service in services.items():
        if listening_port(service) is not None:
            assert name in scraped, f"{name} serves /metrics but Prometheus does not scrape it"
