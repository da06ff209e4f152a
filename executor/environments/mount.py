"""How a kernel's container gets its environment: the set's directory bind-mounted
read-only, and first on the Python path (before the image's own packages, so a version the
request pinned wins over the image's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MOUNT_POINT = "/opt/weft-env"


def mount_options(path: Path | None) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """(volumes, environment variables) to add to a kernel container's options."""
    if path is None:
        return {}, {}
    return {str(path): {"bind": MOUNT_POINT, "mode": "ro"}}, {"PYTHONPATH": MOUNT_POINT}


def add_mount(options: dict[str, Any], path: Path | None) -> dict[str, Any]:
    volumes, environment = mount_options(path)
    return {
        **options,
        "volumes": {**options["volumes"], **volumes},
        "environment": {**options["environment"], **environment},
    }
