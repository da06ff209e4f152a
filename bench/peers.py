"""The persisting peers the benches compare Weft with, installed by the benches themselves.

- **Jupyter's stack**: pycrdt-websocket + pycrdt-store's SQLiteYStore on uvicorn
  (`bench/peers/jupyter_server.py`), in its own venv `bench/.peers/jupyter` (ignored by git),
  made with this Python and the pinned versions below from PyPI.
- **Hocuspocus 4** with its SQLite extension (`bench/js/hocuspocus/server.mjs`), installed by
  `npm ci` in `bench/js/hocuspocus` from its lock file; its native dependency better-sqlite3
  (12.x: 13.x needs Node 22) is built from source against the local Node's headers. The
  client side, `@hocuspocus/provider`, is in `bench/js`'s own lock.

`ensure_jupyter()` and `ensure_hocuspocus()` do nothing when the install is already there and
matches the pins; the first install takes about a minute (Jupyter) and 2-3 minutes
(Hocuspocus: compiling SQLite).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS_DIR = ROOT / "bench" / ".peers"
JUPYTER_VENV = PEERS_DIR / "jupyter"
JUPYTER_SERVER = ROOT / "bench" / "peers" / "jupyter_server.py"
HOCUSPOCUS_DIR = ROOT / "bench" / "js" / "hocuspocus"
HOCUSPOCUS_SERVER = HOCUSPOCUS_DIR / "server.mjs"

# Everything the Jupyter peer imports, pinned (its whole dependency closure).
JUPYTER_PINS = [
    "pycrdt==0.14.13",
    "pycrdt-websocket==0.16.5",
    "pycrdt-store==0.1.5",
    "sqlite-anyio==0.2.10",
    "anyio==4.16.0",
    "uvicorn==0.54.0",
    "websockets==17.4",
    "httptools==0.9.0",
    "uvloop==0.23.0",
]


def _log(message: str) -> None:
    print(f"[peers] {message}", file=sys.stderr, flush=True)


def jupyter_python() -> Path:
    return JUPYTER_VENV / "bin" / "python"


def ensure_jupyter() -> Path:
    """The Jupyter peer's Python, after installing it if needed."""
    stamp = JUPYTER_VENV / "pins.txt"
    wanted = "\n".join(JUPYTER_PINS) + "\n"
    if jupyter_python().exists() and stamp.exists() and stamp.read_text() == wanted:
        return jupyter_python()
    PEERS_DIR.mkdir(parents=True, exist_ok=True)
    (PEERS_DIR / ".gitignore").write_text("*\n")
    _log(f"installing Jupyter's stack into {JUPYTER_VENV}")
    if not jupyter_python().exists():
        subprocess.run([sys.executable, "-m", "venv", str(JUPYTER_VENV)], check=True, timeout=300)
    subprocess.run(
        [str(jupyter_python()), "-m", "pip", "install", "--quiet", *JUPYTER_PINS],
        check=True,
        timeout=900,
        stdout=sys.stderr,
    )
    stamp.write_text(wanted)
    return jupyter_python()


def ensure_hocuspocus() -> Path:
    """bench/js/hocuspocus with its node_modules, after `npm ci` there if needed."""
    marker = HOCUSPOCUS_DIR / "node_modules" / ".package-lock.json"
    native = HOCUSPOCUS_DIR / "node_modules" / "better-sqlite3" / "build" / "Release"
    lock = HOCUSPOCUS_DIR / "package-lock.json"
    if (
        marker.exists()
        and marker.stat().st_mtime >= lock.stat().st_mtime
        and (native / "better_sqlite3.node").exists()
    ):
        return HOCUSPOCUS_DIR
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError("node and npm are needed (Node 20 or later)")
    env = dict(os.environ)
    # better-sqlite3 has no prebuilt binary to fetch here: node-gyp builds it, and must find
    # the Node headers locally instead of downloading them.
    nodedir = Path(node).resolve().parents[1]
    if "npm_config_nodedir" not in env and (nodedir / "include/node/common.gypi").exists():
        env["npm_config_nodedir"] = str(nodedir)
    _log("npm ci in bench/js/hocuspocus (builds better-sqlite3: 2-3 minutes)")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=HOCUSPOCUS_DIR,
        env=env,
        check=True,
        timeout=1200,
        stdout=sys.stderr,
    )
    return HOCUSPOCUS_DIR
