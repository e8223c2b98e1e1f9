"""Test helpers: build small real wheels, serve them from a real package index on loopback.

The server speaks PEP 503 (``/simple/<name>/`` and the per-CUDA layout ``/whl/<flavour>/<name>/``
that download.pytorch.org uses) and mimics GitHub release assets:
``/<owner>/<repo>/releases/download/<tag>/<file>`` answers 302 to ``/assets/<file>`` as github.com
redirects to its object store; HEAD follows the same path.

Faults for the fault-injection tests, per file name: ``cut[name] = n`` serves the file without a
Content-Length and closes the connection after *n* bytes (a server that stops mid-download);
``slow[name] = s`` sleeps *s* seconds after each 64 KiB sent.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import threading
import time
import zipfile
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Optional
from urllib.parse import quote, unquote


def build_wheel(outdir: Path, name: str, version: str, files: dict[str, str],
                requires: tuple[str, ...] = (), tag: str = "py3-none-any") -> Path:
    """A real wheel (zip + dist-info + RECORD) that pip installs like any other."""
    dist = re.sub(r"[-_.]+", "_", name)
    info = f"{dist}-{version}.dist-info"
    path = outdir / f"{dist}-{version}-{tag}.whl"
    outdir.mkdir(parents=True, exist_ok=True)
    record = []
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires) + "\n"
    entries = {**files, f"{info}/METADATA": meta,
               f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: {tag}\n"}
    with zipfile.ZipFile(path, "w") as zf:
        for arc, text in entries.items():
            blob = text.encode()
            zf.writestr(arc, blob)
            digest = base64.urlsafe_b64encode(hashlib.sha256(blob).digest()).rstrip(b"=").decode()
            record.append(f"{arc},sha256={digest},{len(blob)}")
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def stand_in_torch(outdir: Path, version: str = "2.8.0+cu126", cuda: Optional[str] = "12.6") -> Path:
    """A torch that probes and imports like the real one on a machine without a usable GPU."""
    return build_wheel(outdir, "torch", version, {
        "torch/__init__.py": (f"__version__ = {version!r}\nfrom . import version\n"
                              "class cuda:\n    @staticmethod\n    def is_available():\n        return False\n"
                              "class backends:\n    class mps:\n        @staticmethod\n"
                              "        def is_available():\n            return False\n"
                              "def compiled_with_cxx11_abi():\n    return True\n"),
        "torch/version.py": f"__version__ = {version!r}\ncuda = {cuda!r}\nhip = None\n",
        "torch/share/cmake/Torch/TorchConfig.cmake": 'set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=1")\n',
    })


class _Handler(SimpleHTTPRequestHandler):
    root: Path
    log_requests: list[str]
    cut: dict[str, int]
    slow: dict[str, float]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def _route(self) -> Optional[Path]:
        self.log_requests.append(f"{self.command} {self.path}")
        m = re.fullmatch(r"/[^/]+/[^/]+/releases/download/[^/]+/([^/?]+)", self.path)
        if m:
            self.send_response(302)
            self.send_header("Location", f"/assets/{m.group(1)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        m = re.fullmatch(r"/assets/([^/?]+)", self.path)
        if m:
            return self.root / "assets" / unquote(m.group(1))
        m = re.fullmatch(r"/(?:simple|whl/[^/]+)/([^/]+)/?", self.path)
        if m:
            return self._project_page(m.group(1))
        m = re.fullmatch(r"/files/([^/?#]+)(?:#.*)?", self.path)
        if m:
            return self.root / "files" / unquote(m.group(1))
        return self.root / "missing"

    def _project_page(self, project: str) -> Path:
        want = re.sub(r"[-_.]+", "-", project).lower()
        links = []
        for f in sorted((self.root / "files").glob("*")):
            if re.sub(r"[-_.]+", "-", f.name.split("-")[0]).lower() == want:
                digest = hashlib.sha256(f.read_bytes()).hexdigest()
                links.append(f'<a href="/files/{quote(f.name)}#sha256={digest}">{html.escape(f.name)}</a>')
        page = self.root / "pages" / f"{want}.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        if not links:
            return self.root / "missing"
        page.write_text("<!DOCTYPE html><html><body>\n" + "<br>\n".join(links) + "\n</body></html>\n")
        return page

    def _serve(self, head: bool) -> None:
        path = self._route()
        if path is None:
            return
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        ctype = "text/html" if path.suffix == ".html" else "application/octet-stream"
        self.send_header("Content-Type", ctype)
        cut = self.cut.get(path.name)
        if cut is not None:  # no length, and the connection closes early: the body looks complete
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if not head:
                self.wfile.write(data[:cut])
            return
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if head:
            return
        pause = self.slow.get(path.name)
        try:
            if pause is None:
                self.wfile.write(data)
                return
            for i in range(0, len(data), 1 << 16):
                self.wfile.write(data[i:i + (1 << 16)])
                self.wfile.flush()
                time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):  # the client went away mid-download (killed, disk full)
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._serve(head=False)

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        self._serve(head=True)


class Loopback:
    """A threaded HTTP server on 127.0.0.1 (a free port) running a handler class; :attr:`url`,
    :meth:`close`. The package index and the Hub mimic (tests/hubmimic.py) are both one."""

    def _serve(self, handler: type) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class PackageIndex(Loopback):
    """Files under root/files are the index; root/assets the GitHub release assets."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "files").mkdir(parents=True, exist_ok=True)
        (root / "assets").mkdir(parents=True, exist_ok=True)
        self.requests: list[str] = []
        self.cut: dict[str, int] = {}
        self.slow: dict[str, float] = {}
        handler = type("H", (_Handler,), {"root": root, "log_requests": self.requests, "cut": self.cut,
                                          "slow": self.slow})
        self._serve(handler)

    def add(self, wheel: Path) -> Path:
        dest = self.root / "files" / wheel.name
        dest.write_bytes(wheel.read_bytes())
        return dest

    def remove(self, name_prefix: str) -> None:
        for f in (self.root / "files").glob(f"{name_prefix}*"):
            f.unlink()
