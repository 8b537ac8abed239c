"""The gomobile command on the embedded default."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def gomobile(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GOMOBILE_DATA_DIR": str(data_dir)}
    env.pop("GOMOBILE_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "interfaces.cli", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def test_org_create_key_works_and_projection_commands(tmp_path: Path) -> None:
    data = tmp_path / "var"
    out = gomobile(data, "org", "create", "Acme Morocco")
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert set(created) == {"organizationId", "apiKey"}

    from infrastructure.bootstrap import Container
    from infrastructure.settings import Settings

    container = Container(Settings(data_dir=data))
    try:
        who = container.campaigns.authenticate(created["apiKey"])
        assert who is not None and str(who.organization_id) == created["organizationId"] and who.role == "admin"
        assert who.organization.name == "Acme Morocco"
    finally:
        container.close()

    status = gomobile(data, "projections", "status")
    assert status.returncode == 0, status.stderr
    names = {s["projection"]: s for s in json.loads(status.stdout)}
    from infrastructure.bootstrap import PROJECTIONS

    assert set(names) == set(PROJECTIONS)  # every registered read model has its status
    assert {"progress", "call_history", "directory", "reports", "assets", "client_webhooks"} <= set(names)
    assert names["directory"]["lag"]["campaigns"] == 2  # organization created + admin key issued, not yet projected
    assert not any(s["rebuilding"] for s in names.values())

    # A rebuild in another process holds its read model: the status says so.
    container = Container(Settings(data_dir=data))
    try:
        with container.views["directory"].held_for_rebuild():
            during = {s["projection"]: s["rebuilding"] for s in json.loads(gomobile(data, "projections", "status").stdout)}
    finally:
        container.close()
    assert during == {n: n == "directory" for n in names}

    rebuilt = gomobile(data, "projections", "rebuild", "directory")
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads(rebuilt.stdout.strip().splitlines()[-1]) == {"projection": "directory", "eventsApplied": 2}
    assert gomobile(data, "projections", "status").returncode == 0

    unknown = gomobile(data, "projections", "rebuild", "nope")
    assert unknown.returncode == 2 and "unknown read model 'nope'" in unknown.stderr
    bad = gomobile(data, "org", "create", " ")
    assert bad.returncode == 2 and "name" in bad.stderr
