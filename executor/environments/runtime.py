"""What a runtime image is, as environments need it: its Python, its platform, and the
packages it already has. Asked of the image itself, once per image id (a locked-down
container with no network prints it), and kept in memory and on disk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name

from executor.environments.errors import EnvironmentFailure

_PROBE = """
import importlib.metadata as m, json, platform
packages = {}
for d in m.distributions():
    name = d.metadata["Name"]
    if name:
        packages[name] = d.version
print(json.dumps({"python": platform.python_version(), "machine": platform.machine(),
                  "libc": list(platform.libc_ver()), "packages": packages}))
"""


@dataclass(frozen=True)
class Runtime:
    """One runtime image: the wheels that fit it and the packages it has.

    >>> runtime.python_tag, runtime.platforms[0]   # ("cp311", "manylinux_2_36_x86_64")
    """

    image: str
    image_id: str
    python: str  # "3.11.2"
    machine: str  # "x86_64"
    glibc: tuple[int, int]
    packages: dict[str, str]  # canonical name -> version, of the image itself

    @property
    def python_version(self) -> str:
        return ".".join(self.python.split(".")[:2])

    @property
    def python_tag(self) -> str:
        return "cp" + self.python_version.replace(".", "")

    @property
    def platforms(self) -> list[str]:
        """manylinux platform tags this image's glibc runs, newest first (PEP 600, 599)."""
        major, minor = self.glibc
        tags = [f"manylinux_{major}_{m}_{self.machine}" for m in range(minor, 4, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        return tags + [f"{legacy[m]}_{self.machine}" for m in (17, 12, 5) if m <= minor]

    def tags(self) -> set[Tag]:
        version = tuple(int(p) for p in self.python_version.split("."))
        return {
            *cpython_tags(version, abis=[self.python_tag], platforms=self.platforms),
            *compatible_tags(version, interpreter=self.python_tag, platforms=self.platforms),
        }

    def describe(self) -> dict[str, str]:
        """What the document records of it (meta.metadata.environment.runtime)."""
        return {
            "image": self.image,
            "image_id": self.image_id,
            "python": self.python,
            "platform": self.platforms[0],
        }

    def pip_target(self) -> list[str]:
        """pip's options for wheels of this runtime instead of the host's."""
        options = [
            "--only-binary=:all:",
            "--implementation",
            "cp",
            "--python-version",
            self.python_version,
            "--abi",
            self.python_tag,  # abi3 and none wheels fit as well (pip adds them)
        ]
        for platform in self.platforms:
            options += ["--platform", platform]
        return options


def _from_probe(image: str, image_id: str, data: dict[str, Any]) -> Runtime:
    libc = data.get("libc") or ["", ""]
    if libc[0] != "glibc":
        raise EnvironmentFailure(
            "install",
            f"the runtime image {image} has no glibc ({libc}): environments need a "
            "manylinux-compatible image",
        )
    major, minor = (int(p) for p in str(libc[1]).split(".")[:2])
    return Runtime(
        image=image,
        image_id=image_id,
        python=str(data["python"]),
        machine=str(data["machine"]),
        glibc=(major, minor),
        packages={canonicalize_name(k): str(v) for k, v in dict(data["packages"]).items()},
    )


def probe_runtime(client: docker.DockerClient, image: str, cache_dir: Path) -> Runtime:
    """The runtime of ``image`` (blocking: call it in a worker thread)."""
    try:
        image_id = str(client.images.get(image).id)
    except docker.errors.ImageNotFound:
        raise EnvironmentFailure(
            "install",
            f"runtime image {image} is missing; build it with scripts/ensure-runtime-image.sh",
        ) from None
    cached = cache_dir / f"{image_id.replace(':', '-')}.json"
    if cached.exists():
        return _from_probe(image, image_id, json.loads(cached.read_text()))
    try:
        output = client.containers.run(
            image_id,
            ["python3", "-c", _PROBE],
            remove=True,
            network_mode="none",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            user="1000:1000",
            mem_limit="256m",
            log_config={"type": "json-file"},  # the probe's output is read from its log
        )
        data = json.loads(output)
    except (docker.errors.DockerException, ValueError) as exc:
        raise EnvironmentFailure(
            "install", f"could not ask the runtime image {image} what it holds: {exc}"
        ) from None
    cache_dir.mkdir(parents=True, exist_ok=True)
    temporary = cached.with_suffix(".tmp")
    temporary.write_text(json.dumps(data))
    temporary.replace(cached)
    return _from_probe(image, image_id, data)
