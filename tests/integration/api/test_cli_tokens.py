"""A token minted with another state directory (another generated key), as a new user
makes one: the server's 401 and the CLI say what to check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from paas_pitr.engines.memory import InMemoryEngine
from tests.integration.api.test_cli_ops import EXECUTABLE, environment, in_pipe
from tests.integration.conftest import RunningApi

SIGNED_ELSEWHERE = (
    "the token is signed with another key than this server's: create it with "
    "`paas-pitr token create` run with the same PAAS_PITR_TOKEN_SECRET as the server or, "
    "when the server has none, the same state directory (PAAS_PITR_STATE_DIR), as "
    "`paas-pitr serve` prints it"
)


@pytest.fixture
def engine() -> InMemoryEngine:
    return InMemoryEngine(mode="in-tree")


def test_a_token_of_another_state_directory(api: RunningApi, tmp_path: Path) -> None:
    env = environment(api, PAAS_PITR_STATE_DIR=str(tmp_path))
    env.pop("PAAS_PITR_TOKEN_SECRET", None)  # the key is the one generated in tmp_path
    minted = subprocess.run(
        [EXECUTABLE, "token", "create", "--tenant", "acme"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = minted.stdout.strip()
    with api.client(token) as client:
        response = client.get("/v1/apps/shop/addons")
    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["code"], error["message"]) == ("unauthorized", SIGNED_ELSEWHERE)
    assert error["details"] == {"reason": "signature"}

    listed = in_pipe(api, "addons", "list", "--app", "shop", PAAS_PITR_TOKEN=token)
    assert listed.returncode == 2
    assert listed.stderr == f"paas-pitr: error [unauthorized]: {SIGNED_ELSEWHERE}\n"


@pytest.mark.parametrize("days", ["-1", "36501", "3000000", "99999999999"])
def test_a_validity_past_a_century_is_refused_in_one_line(tmp_path: Path, days: str) -> None:
    minted = subprocess.run(
        [EXECUTABLE, "token", "create", "--tenant", "acme", "--days", days],
        env={"PATH": "/usr/bin:/bin", "PAAS_PITR_STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert minted.returncode == 2
    assert minted.stdout == ""
    assert minted.stderr == (
        "paas-pitr: error: --days must be from 1 to 36500 (100 years), or 0 for no expiry\n"
    )
