"""The one exception of environments: what went wrong, for which requirement, and what to
change, in words the notebook shows."""

from __future__ import annotations


class EnvironmentFailure(Exception):
    """An environment could not be prepared.

    ``kind``: invalid | unknown | no-version | no-wheel | conflict | index | install |
    runtime (the notebook names a runtime image the server does not offer);
    ``requirement``: the requirement it is about, when there is one.
    """

    def __init__(self, kind: str, message: str, requirement: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.requirement = requirement

    def as_json(self) -> dict[str, str | None]:
        return {"kind": self.kind, "message": self.message, "requirement": self.requirement}
