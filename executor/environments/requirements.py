"""A notebook's request: ``meta.metadata.dependencies``, a list of PEP 508 strings.

It comes from the document, so from anyone who may edit the notebook: every string is
parsed with ``packaging`` and written back in its canonical form before anything else sees
it. Only names from the configured index are allowed: a direct reference
(``pkg @ https://...``) would make the server fetch any URL, and a string starting with
``-`` would be an option to pip, so both are refused.
"""

from __future__ import annotations

from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from executor.environments.errors import EnvironmentFailure

MAX_REQUIREMENTS = 64
MAX_LENGTH = 200


def parse_requirements(value: Any) -> list[Requirement]:
    """The request as requirements, in the order given; EnvironmentFailure("invalid") naming
    the first string that is not one."""
    if value is None:
        return []
    if not isinstance(value, list):
        # A list (older documents) or a Y.Array of strings: both read as a list.
        raise EnvironmentFailure(
            "invalid", 'dependencies must be a list of requirement strings, like ["tabulate"]'
        )
    if len(value) > MAX_REQUIREMENTS:
        raise EnvironmentFailure(
            "invalid", f"a notebook may declare at most {MAX_REQUIREMENTS} dependencies"
        )
    seen: dict[str, str] = {}
    out = []
    for item in value:
        requirement = parse_requirement(item)
        name = canonicalize_name(requirement.name)
        if name in seen:
            raise EnvironmentFailure(
                "invalid",
                f"{requirement.name} is listed twice ({seen[name]!r} and {_short(item)}): "
                "keep one, with every version bound in it",
                str(item),
            )
        seen[name] = str(item)
        out.append(requirement)
    return out


def parse_requirement(item: Any) -> Requirement:
    if not isinstance(item, str) or not item.strip():
        raise EnvironmentFailure(
            "invalid", f"{_short(item)} is not a requirement: write a package name, like 'tabulate'"
        )
    text = item.strip()
    if len(text) > MAX_LENGTH:
        raise EnvironmentFailure(
            "invalid", f"a requirement may be at most {MAX_LENGTH} characters", text[:60]
        )
    if text.startswith("-"):
        raise EnvironmentFailure(
            "invalid",
            f"{text!r} is an installer option, not a requirement: options are not allowed "
            "(the package index is a server setting)",
            text,
        )
    try:
        requirement = Requirement(text)
    except InvalidRequirement as exc:
        raise EnvironmentFailure(
            "invalid",
            f"{text!r} is not a valid requirement ({exc}); write it as 'name', "
            "'name==1.2' or 'name>=1.0,<2'",
            text,
        ) from None
    if requirement.url:
        raise EnvironmentFailure(
            "invalid",
            f"{text!r} names a URL: packages come from the server's package index only; "
            f"write '{requirement.name}' with a version instead",
            text,
        )
    return requirement


def _short(item: Any) -> str:
    """A value from the document, as a message may quote it (it may be huge, or a map)."""
    text = repr(item)
    return text if len(text) <= 80 else f"{text[:60]}… ({type(item).__name__})"


def canonical(requirements: list[Requirement]) -> list[str]:
    """The request as the record keeps it: canonical strings, in the order given."""
    return [str(r) for r in requirements]


def with_requirement(dependencies: Any, new: str) -> tuple[list[str], str | None]:
    """``dependencies`` with ``new`` added, or replacing the entry for the same package
    (%pip install). Returns the new list and the entry it replaced, if any."""
    added = parse_requirement(new)
    current = list(dependencies) if isinstance(dependencies, list) else []
    name = canonicalize_name(added.name)
    replaced = None
    out: list[str] = []
    for item in current:
        try:
            same = canonicalize_name(parse_requirement(item).name) == name
        except EnvironmentFailure:
            same = False
        if same:
            replaced = str(item)
            if str(added) not in out:
                out.append(str(added))
        else:
            out.append(str(item))
    if replaced is None:
        out.append(str(added))
    return out, replaced
