"""A request -> the exact set of wheels to install, by pip's own resolver on the server
(``pip install --dry-run --report``), for the runtime's Python and platform, wheels only.

Why pip and why wheels only: pip's resolver is the reference implementation of
dependency resolution for the index's metadata, and with ``--only-binary=:all:`` it reads
each candidate's metadata from the wheel (or the index's PEP 658 copy of it): nothing of a
package runs on the host. A source distribution would have to be built, which runs its
build scripts; those are refused (the error says so) rather than run here.

pip runs in a subprocess with no configuration but ours (``PIP_CONFIG_FILE`` is
``/dev/null``, no ``PIP_*`` variables are passed on), so the machine's pip settings can
never add an index: the configured index is the only source.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from executor.environments.diagnosis import explain_not_found
from executor.environments.errors import EnvironmentFailure
from executor.environments.runtime import Runtime

# Passed on to pip so an operator's proxy and CA bundle still apply.
_PASSED_ENV = (
    "PATH",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
)
_LOG_KEPT = 20_000


@dataclass(frozen=True)
class Package:
    """One resolved distribution: exactly this file (its sha256) of this version."""

    name: str  # canonical
    version: str
    sha256: str
    # Where the index serves it, as pip's resolution reported (never from the document):
    # the file is then fetched directly; without it, pip finds it on the index by its pin.
    url: str | None = field(default=None, compare=False)

    def pin(self) -> str:
        return f"{self.name}=={self.version} --hash=sha256:{self.sha256}"


def pip_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _PASSED_ENV}
    env.update(
        {
            "HOME": str(home),
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_NO_INPUT": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


async def run_pip(
    args: list[str],
    *,
    cwd: Path,
    limit_s: float,
    on_line: Callable[[str], None] | None = None,
) -> tuple[int, str]:
    """``python -m pip ARGS`` of the server's own interpreter; (exit code, its output)."""
    lines: list[str] = []
    command = [sys.executable, "-m", "pip", *args]
    # A HOME of its own: nothing pip (or anything it starts) keeps there lands in our dirs.
    with (
        tempfile.TemporaryDirectory(prefix="weft-pip-home-") as home,
        anyio.move_on_after(limit_s) as scope,
    ):
        async with await anyio.open_process(
            command, cwd=cwd, env=pip_env(Path(home)), stdin=None, stderr=subprocess.STDOUT
        ) as process:
            assert process.stdout is not None
            buffered = b""
            async for chunk in process.stdout:
                buffered += chunk
                *complete, buffered = buffered.split(b"\n")
                for raw in complete:
                    line = raw.decode(errors="replace").rstrip()
                    lines.append(line)
                    if on_line is not None and line:
                        on_line(line)
            if buffered:
                lines.append(buffered.decode(errors="replace"))
            code = await process.wait()
    output = "\n".join(lines)
    if scope.cancelled_caught:
        raise EnvironmentFailure(
            "index",
            f"the installer took longer than {limit_s:g} s (WEFT_ENV_TIMEOUT_SECONDS); "
            "the package index may be slow: try again",
        )
    return code, output[-_LOG_KEPT:]


def _conflict(output: str) -> EnvironmentFailure:
    causes: list[str] = []
    grab = False
    for line in output.splitlines():
        if "The conflict is caused by" in line:
            grab = True
            continue
        if grab:
            if not line.strip():
                if causes:
                    break
                continue
            causes.append(line.strip())
    match = re.search(r"Cannot install (.+?) because", output)
    involved = match.group(1) if match else None
    why = "; ".join(causes[:6]) or "pip found no set of versions that satisfies all of them"
    return EnvironmentFailure(
        "conflict",
        f"the dependencies conflict ({why}); loosen or change one of these version bounds",
        involved,
    )


def _failure(output: str, runtime: Runtime, index_url: str) -> EnvironmentFailure:
    if "ResolutionImpossible" in output or "conflicting dependencies" in output:
        return _conflict(output)
    missing = re.search(r"No matching distribution found for (\S.*)", output)
    if missing:
        requirement = missing.group(1).strip()
        said = re.search(r"Could not find a version that satisfies the requirement .*", output)
        return explain_not_found(requirement, runtime, index_url, said.group(0) if said else "")
    last = [line for line in output.splitlines() if line.startswith("ERROR:")]
    detail = last[-1].removeprefix("ERROR:").strip() if last else output.strip()[-300:]
    return EnvironmentFailure("index", f"resolving the dependencies failed: {detail}")


async def resolve(
    requirements: list[Requirement],
    runtime: Runtime,
    *,
    index_url: str,
    cache_dir: Path,
    limit_s: float,
    on_line: Callable[[str], None] | None = None,
) -> list[Package]:
    """The full set of distributions for ``requirements``: first as far as possible the
    versions the runtime image already has (they need no download and no directory of
    their own), and if that cannot satisfy the request, whatever does."""
    with tempfile.TemporaryDirectory(prefix="weft-resolve-") as temporary:
        work = Path(temporary)
        (work / "requirements.txt").write_text("".join(f"{r}\n" for r in requirements))
        (work / "runtime.txt").write_text(
            "".join(f"{name}=={version}\n" for name, version in sorted(runtime.packages.items()))
        )
        failure: EnvironmentFailure | None = None
        for constrained in (True, False):
            args = [
                "install",
                "--dry-run",
                "--ignore-installed",
                "--report",
                str(work / "report.json"),
                "--index-url",
                index_url,
                "--cache-dir",
                str(cache_dir),
                *runtime.pip_target(),
                "-r",
                str(work / "requirements.txt"),
            ]
            if constrained:
                args += ["-c", str(work / "runtime.txt")]
            code, output = await run_pip(args, cwd=work, limit_s=limit_s, on_line=on_line)
            if code == 0:
                return _packages(json.loads((work / "report.json").read_text()))
            failure = await anyio.to_thread.run_sync(_failure, output, runtime, index_url)
            if failure.kind in ("unknown", "no-wheel", "index"):
                break  # no constraint causes these: the second try would say the same
        assert failure is not None
        raise failure


def _packages(report: dict[str, object]) -> list[Package]:
    out = []
    for item in report.get("install") or []:  # type: ignore[attr-defined]
        metadata = item["metadata"]
        archive = item["download_info"].get("archive_info") or {}
        sha256 = (archive.get("hashes") or {}).get("sha256")
        if not sha256:
            raise EnvironmentFailure(
                "index",
                f"the package index gave no sha256 for {metadata['name']}: environments "
                "record the hash of every file, so the index must publish them",
            )
        url = item["download_info"].get("url")
        url = url if isinstance(url, str) and url.startswith(("https://", "http://")) else None
        out.append(Package(canonicalize_name(metadata["name"]), metadata["version"], sha256, url))
    return sorted(out, key=lambda p: p.name)
