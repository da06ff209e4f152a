"""Per-notebook environments: the packages a notebook declares
(``meta.metadata.dependencies``), resolved and installed by the server from wheels into a
shared, content-addressed, read-only directory that the kernel mounts (docs/executor.md,
"Environments").

```
requirements.py  the request: PEP 508 strings, checked and normalised
runtime.py       what a runtime image is (Python, platform, its own packages), probed once
resolver.py      the request -> an exact set of wheels (pip's resolver, wheels only)
diagnosis.py     why a requirement has no wheel: unknown, no version, not for the platform
store.py         wheels by hash, and one read-only directory per (set, runtime)
record.py        the resolved set as the document records it (meta.metadata.environment)
preparer.py      Environments: a notebook's request -> a mounted directory, with progress
```
"""

from executor.environments.errors import EnvironmentFailure
from executor.environments.preparer import Environments, Prepared

__all__ = ["EnvironmentFailure", "Environments", "Prepared"]
