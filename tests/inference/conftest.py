import os

import pytest

from inference.replicas import INSTALL_HINT, gateway_command
from tests.tiny_model_fixture import tiny_engine, tiny_model_path, tiny_server_url

__all__ = ["require_smg", "tiny_engine", "tiny_model_path", "tiny_server_url"]


@pytest.fixture(scope="session")
def require_smg() -> list[str]:
    """The `smg` launcher. Missing: a skip on a developer's machine, a failure in CI (`CI=true`),
    where a router test that silently skips would prove nothing."""
    command = gateway_command("smg")
    if command is None:
        message = f"smg is not installed ({INSTALL_HINT['smg']})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return command
