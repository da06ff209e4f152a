"""The runtime images a notebook may choose: ``default`` (``WEFT_KERNEL_IMAGE``) and the
ones an admin registers (``WEFT_KERNEL_IMAGES="gpu=registry.example/weft-gpu:3,slim=weft-slim"``).

A notebook names its choice in ``meta.metadata.runtime``. The document is written by anyone
who may edit the notebook, so the name is only ever looked up among the registered ones: a
string that is not one of them (or no string at all, or a huge one) never becomes an image
reference; it is an error naming the choices.

>>> images = RuntimeImages.parse("weft-runtime:latest", "gpu=weft-gpu:3")
>>> images.choose({"runtime": "gpu"})
RuntimeImage(name='gpu', image='weft-gpu:3')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from collab.settings import SettingsError
from executor.environments.errors import EnvironmentFailure

DEFAULT = "default"
RUNTIME_KEY = "runtime"  # meta.metadata.runtime
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,39}$")
# A Docker image reference: [registry[:port]/]path[:tag][@sha256:...]; no spaces or commas.
_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")
_FORMAT = "WEFT_KERNEL_IMAGES must be name=image pairs separated by commas"
_EXAMPLE = "e.g. WEFT_KERNEL_IMAGES=gpu=registry.example/weft-gpu:3,slim=weft-slim:1"


@dataclass(frozen=True)
class RuntimeImage:
    name: str
    image: str


@dataclass(frozen=True)
class RuntimeImages:
    """The registered runtimes, the default first."""

    images: tuple[RuntimeImage, ...]

    @classmethod
    def parse(cls, default_image: str, registered: str | None) -> RuntimeImages:
        """``default`` is ``default_image``; ``registered`` is WEFT_KERNEL_IMAGES. A malformed
        value raises SettingsError saying what to write."""
        _check_reference("WEFT_KERNEL_IMAGE", default_image)
        images = [RuntimeImage(DEFAULT, default_image)]
        for entry in (registered or "").split(","):
            entry = entry.strip()
            if not entry:
                continue
            name, equals, image = (part.strip() for part in entry.partition("="))
            if not equals or not name or not image:
                raise SettingsError(f"{_FORMAT}, got {entry[:80]!r} ({_EXAMPLE})")
            if not _NAME.match(name):
                raise SettingsError(
                    f"WEFT_KERNEL_IMAGES: the name {name[:80]!r} must be 1 to 40 lower-case "
                    f"letters, digits, '.', '_' or '-' ({_EXAMPLE})"
                )
            if name == DEFAULT:
                raise SettingsError(
                    "WEFT_KERNEL_IMAGES: 'default' is the name of WEFT_KERNEL_IMAGE; "
                    "set WEFT_KERNEL_IMAGE to change the default image"
                )
            if any(known.name == name for known in images):
                raise SettingsError(f"WEFT_KERNEL_IMAGES names {name!r} twice: keep one")
            _check_reference(f"WEFT_KERNEL_IMAGES ({name})", image)
            images.append(RuntimeImage(name, image))
        return cls(tuple(images))

    @property
    def default(self) -> RuntimeImage:
        return self.images[0]

    @property
    def names(self) -> list[str]:
        return [image.name for image in self.images]

    def choose(self, metadata: Mapping[str, Any]) -> RuntimeImage:
        """The runtime ``meta.metadata.runtime`` names (none or empty: the default);
        EnvironmentFailure("runtime") naming the choices for anything else."""
        chosen = metadata.get(RUNTIME_KEY)
        if chosen is None or chosen == "" or chosen == DEFAULT:
            return self.default
        for image in self.images:
            if isinstance(chosen, str) and chosen == image.name:
                return image
        raise EnvironmentFailure(
            "runtime",
            f"this notebook asks for the runtime {_shown(chosen)}, which this server does not "
            "offer; "
            f"choose one of: {', '.join(self.names)} (Configuration panel, Runtime)",
        )

    def describe(self) -> list[dict[str, Any]]:
        """What the API shows (GET /api/notebooks/{id}/runtimes)."""
        return [
            {"name": image.name, "image": image.image, "default": image.name == DEFAULT}
            for image in self.images
        ]


def _shown(value: Any) -> str:
    """A document's value, short (it may be huge, or not a string at all)."""
    if not isinstance(value, str):
        return f"({type(value).__name__}, not a name)"
    return repr(value if len(value) <= 40 else value[:40] + "…")


def _check_reference(setting: str, image: str) -> None:
    if not _REFERENCE.match(image):
        raise SettingsError(
            f"{setting} must be a Docker image reference like weft-runtime:latest or "
            f"registry.example/weft-gpu:3, got {image[:80]!r}"
        )
