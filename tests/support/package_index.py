"""A real package index on 127.0.0.1 for tests: the simple API (PEP 503 HTML and PEP 691
JSON) over a folder of real wheel files, served by a thread of this process.

Wheels are built here (``build_wheel``: a zip with the files, METADATA, WHEEL and RECORD
that pip installs like any other), or are real PyPI wheels that ``scripts/setup.sh --dev``
downloads into ``.state/test-wheels`` (tests never reach the network themselves).

>>> wheels = tmp_path / "wheels"
>>> build_wheel(wheels, "weftdemo", "1.0", files={"weftdemo/__init__.py": "X = 1\\n"})
>>> with PackageIndex(wheels) as index:
...     index.url  # "http://127.0.0.1:PORT/simple"
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]
# Real wheels from PyPI, fetched by scripts/setup.sh --dev (see TEST_WHEELS there).
SETUP_WHEELS = ROOT / ".state" / "test-wheels"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode()


def build_wheel(
    folder: Path,
    name: str,
    version: str,
    *,
    files: dict[str, str] | None = None,
    requires: list[str] | None = None,
    tag: str = "py3-none-any",
) -> Path:
    """A real wheel ``name-version-tag.whl`` in ``folder`` (importable as ``name``)."""
    folder.mkdir(parents=True, exist_ok=True)
    module = name.replace("-", "_")
    files = files if files is not None else {f"{module}/__init__.py": f"VERSION = {version!r}\n"}
    dist_info = f"{module}-{version}.dist-info"
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {r}\n" for r in requires or [])
    wheel_meta = f"Wheel-Version: 1.0\nGenerator: weft-tests\nRoot-Is-Purelib: true\nTag: {tag}\n"
    contents = {
        **files,
        f"{dist_info}/METADATA": metadata,
        f"{dist_info}/WHEEL": wheel_meta,
    }
    path = folder / f"{module}-{version}-{tag}.whl"
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, text in contents.items():
            data = text.encode()
            archive.writestr(member, data)
            record.append(f"{member},{_record_hash(data)},{len(data)}")
        record.append(f"{dist_info}/RECORD,,")
        archive.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return path


def build_sdist(folder: Path, name: str, version: str) -> Path:
    """A source distribution (a tarball name only matters here: it must never be used)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name.replace('-', '_')}-{version}.tar.gz"
    path.write_bytes(b"not a real tarball: an installer that builds sdists would fail here")
    return path


def _project_of(filename: str) -> str:
    stem = filename.removesuffix(".whl").removesuffix(".tar.gz").removesuffix(".zip")
    return normalize(stem.split("-")[0])


class PackageIndex:
    """Serves every file in ``folder`` under ``/simple/<project>/`` with its sha256, and
    counts the requests (to prove a cached environment asks the index nothing)."""

    def __init__(self, folder: Path, *, file_delay_s: float = 0.0) -> None:
        self.folder = folder
        # Each file download waits this long (a slow index, so progress can be watched).
        self.file_delay_s = file_delay_s
        self.requests: list[str] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/simple"

    def files(self, project: str) -> Iterator[Path]:
        for path in sorted(self.folder.iterdir()):
            if path.is_file() and _project_of(path.name) == normalize(project):
                yield path

    def __enter__(self) -> PackageIndex:
        index = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: object) -> None:
                pass

            def do_GET(self) -> None:
                index.requests.append(self.path)
                parts = [p for p in self.path.split("?")[0].split("/") if p]
                if len(parts) == 2 and parts[0] == "files":
                    path = index.folder / parts[1]
                    if "/" in parts[1] or not path.is_file():
                        self.send_error(404)
                        return
                    time.sleep(index.file_delay_s)
                    self._send(path.read_bytes(), "application/octet-stream")
                    return
                if len(parts) == 2 and parts[0] == "simple":
                    found = list(index.files(parts[1]))
                    if not found:
                        self.send_error(404)
                        return
                    if "application/vnd.pypi.simple.v1+json" in self.headers.get("Accept", ""):
                        self._send_json(parts[1], found)
                    else:
                        links = "".join(
                            f'<a href="../../files/{html.escape(p.name)}#sha256='
                            f'{hashlib.sha256(p.read_bytes()).hexdigest()}">'
                            f"{html.escape(p.name)}</a>\n"
                            for p in found
                        )
                        body = f"<!DOCTYPE html><html><body>\n{links}</body></html>\n"
                        self._send(body.encode(), "text/html")
                    return
                self.send_error(404)

            def _send_json(self, project: str, found: list[Path]) -> None:
                body = {
                    "meta": {"api-version": "1.0"},
                    "name": normalize(project),
                    "files": [
                        {
                            "filename": p.name,
                            "url": f"../../files/{p.name}",
                            "hashes": {"sha256": hashlib.sha256(p.read_bytes()).hexdigest()},
                        }
                        for p in found
                    ],
                }
                self._send(json.dumps(body).encode(), "application/vnd.pypi.simple.v1+json")

            def _send(self, body: bytes, content_type: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
