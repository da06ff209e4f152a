"""The resolved set as the document records it, beside the request:

```
meta.metadata.dependencies = ["tabulate", "polars>=1.0"]          # what people ask for
meta.metadata.environment  = {                                    # what it resolved to
  "request": ["tabulate", "polars>=1.0"],                         # the request it is for
  "packages": [{"name", "version", "sha256", "in_runtime"}, ...], # every distribution
  "runtime": {"image", "image_id", "python", "platform"},
  "resolved_at": "2026-...", "key": "<directory key>" | null,
}
```

A copy of the notebook (or the same notebook next year) whose request equals the record's
installs exactly the recorded versions and files, without resolving again, until someone
asks to update. Like the request, the record comes from the document, so from anyone who
may edit it: it is read into checked values (a name and a version that parse, a sha256),
and nothing in it is used as a URL or a path.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from executor.environments.resolver import Package
from executor.environments.runtime import Runtime

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def recorded_packages(record: Any, request: list[str], runtime: Runtime) -> list[Package] | None:
    """The recorded set, if the record is for this request and this runtime's Python and
    platform (an image rebuilt with the same Python keeps it); otherwise None."""
    if not isinstance(record, dict) or record.get("request") != request:
        return None
    recorded_runtime = record.get("runtime")
    if not isinstance(recorded_runtime, dict) or (
        str(recorded_runtime.get("python", "")).split(".")[:2] != runtime.python.split(".")[:2]
        or recorded_runtime.get("platform") != runtime.platforms[0]
    ):
        return None
    items = record.get("packages")
    if not isinstance(items, list) or len(items) > 1000:
        return None
    out = []
    for item in items:
        if not isinstance(item, dict):
            return None
        name, version, sha256 = item.get("name"), item.get("version"), item.get("sha256")
        if not (isinstance(name, str) and isinstance(version, str) and isinstance(sha256, str)):
            return None
        try:
            Version(version)
        except InvalidVersion:
            return None
        if not _NAME.match(canonicalize_name(name)) or not _SHA256.match(sha256):
            return None
        out.append(Package(canonicalize_name(name), version, sha256))
    return out


def to_install(packages: list[Package], runtime: Runtime) -> list[Package]:
    """What the environment's directory must hold: every package the image lacks, or has
    in another version."""
    return [p for p in packages if runtime.packages.get(p.name) != p.version]


def make_record(
    request: list[str], packages: list[Package], runtime: Runtime, key: str | None
) -> dict[str, Any]:
    return {
        "request": request,
        "packages": [
            {
                "name": p.name,
                "version": p.version,
                "sha256": p.sha256,
                "in_runtime": runtime.packages.get(p.name) == p.version,
            }
            for p in packages
        ],
        "runtime": runtime.describe(),
        "resolved_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "key": key,
    }


def same_record(a: Any, b: dict[str, Any]) -> bool:
    """Whether writing ``b`` would change anything but the time it was made."""
    if not isinstance(a, dict):
        return False
    return {k: v for k, v in a.items() if k != "resolved_at"} == {
        k: v for k, v in b.items() if k != "resolved_at"
    }
