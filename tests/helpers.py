"""Helpers the tests share: paths, subprocess environments, store snapshots, reading a flow run's task runs
and artifacts back from the Prefect API."""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def quiet_env(prefect_home: Path, api_url: str | None) -> dict[str, str]:
    """Environment for a subprocess: its own PREFECT_HOME, no telemetry, a given server or none."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS="false",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def store_snapshot(root: Path) -> dict[str, str]:
    """Every file under a store with the SHA-256 of its bytes (lock files excluded: they come and go)."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "locks" not in path.parts
    }


def task_runs(flow_run_id: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def run_artifacts(flow_run_id: str) -> dict[str, Any]:
    """The artifacts of a flow run and of its task runs, by key (or id when they have no key)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return {artifact.key or str(artifact.id): artifact for artifact in artifacts}
