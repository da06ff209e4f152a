"""Why pip found nothing for a requirement, told apart by asking the index ourselves:
the project does not exist, no version matches, or no wheel fits the runtime (only
source archives, or wheels for other platforms or Pythons)."""

from __future__ import annotations

import html.parser

import httpx
from packaging.requirements import Requirement
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import Version

from executor.environments.errors import EnvironmentFailure
from executor.environments.runtime import Runtime

_JSON = "application/vnd.pypi.simple.v1+json"
_MAX_PAGE = 8 * 1024 * 1024


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href") or ""
            self.names.append(href.split("#")[0].rstrip("/").rsplit("/", 1)[-1])


def _filenames(response: httpx.Response) -> list[str]:
    if response.headers.get("content-type", "").startswith(_JSON):
        return [str(f.get("filename", "")) for f in response.json().get("files", [])]
    parser = _Links()
    parser.feed(response.text)
    return parser.names


def project_files(index_url: str, name: str, timeout: float = 30.0) -> list[str] | None:
    """The file names the index lists for the project, None if it has no such project."""
    url = f"{index_url.rstrip('/')}/{canonicalize_name(name)}/"
    headers = {"Accept": f"{_JSON}, text/html;q=0.1"}
    try:
        response = httpx.get(url, headers=headers, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise EnvironmentFailure(
            "index", f"the package index {index_url} did not answer ({exc}); try again later"
        ) from None
    if response.status_code == 404:
        return None
    if response.status_code != 200 or len(response.content) > _MAX_PAGE:
        raise EnvironmentFailure(
            "index", f"the package index answered {response.status_code} for {name}"
        )
    try:
        return _filenames(response)
    except (ValueError, AttributeError):
        return []


def explain_not_found(
    requirement: str, runtime: Runtime, index_url: str, pip_said: str = ""
) -> EnvironmentFailure:
    """The named error for a requirement pip found no distribution for."""
    parsed = Requirement(requirement)
    name = parsed.name
    files = project_files(index_url, name)
    if files is None:
        return EnvironmentFailure(
            "unknown",
            f"{requirement}: there is no package named {name!r} on the package index; "
            "check the spelling (the name you pip install, not the one you import)",
            requirement,
        )
    fitting: list[Version] = []
    other: set[str] = set()
    sdists: list[Version] = []
    tags = runtime.tags()
    for filename in files:
        try:
            _name, version, _build, wheel_tags = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            try:
                sdists.append(parse_sdist_filename(filename)[1])
            except InvalidSdistFilename:
                pass
            continue
        if wheel_tags & tags:
            fitting.append(version)
        else:
            other.update(str(t.platform) for t in wheel_tags)
    matching = [v for v in fitting if parsed.specifier.contains(v, prereleases=True)]
    if fitting and not matching:
        shown = ", ".join(str(v) for v in sorted(set(fitting))[-8:])
        return EnvironmentFailure(
            "no-version",
            f"{requirement}: no version of {name} matches (versions with a wheel for this "
            f"runtime: {shown}); change the version bound",
            requirement,
        )
    if matching:  # wheels that fit and match, refused for another reason (Requires-Python)
        return EnvironmentFailure(
            "no-version",
            f"{requirement}: no version of {name} installs on Python "
            f"{runtime.python_version} ({pip_said or 'pip found none'}); change the version bound",
            requirement,
        )
    where = f"Python {runtime.python_version} on {runtime.platforms[0]}"
    if other:
        found = ", ".join(sorted(other)[:4])
        detail = f"its wheels are for other platforms or Pythons ({found})"
    elif sdists:
        detail = "it publishes only source archives, and the server installs wheels only"
    else:
        detail = "the index lists no files for it"
    return EnvironmentFailure(
        "no-wheel",
        f"{requirement}: no wheel of {name} fits {where}: {detail}; pick a version that has "
        "one, or another package",
        requirement,
    )
