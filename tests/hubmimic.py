"""A loopback mimic of the Hugging Face Hub's kernel-repository API, the part `huggingface_hub`
(2.4) and `kernels` (0.17) call: refs, trees, revision info, resolve (HEAD + GET) and the
publisher-trust lookup. Paths and headers follow the real Hub (huggingface_hub hf_api.py,
file_download.py; kernels hf_hub.py), for repositories of type "kernel" (URL prefix kernels/)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Optional
from urllib.parse import unquote, urlsplit

from tests.pkgindex import Loopback

__all__ = ["HubMimic", "KernelRepo"]


@dataclass
class KernelRepo:
    """One kernel repository: commits (sha -> {path: bytes}) and branches (name -> sha)."""

    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def commit(self, files: dict[str, bytes], branch: str) -> str:
        sha = hashlib.sha1(json.dumps(sorted((p, hashlib.sha256(b).hexdigest()) for p, b in files.items()))
                           .encode()).hexdigest()
        self.commits[sha] = dict(files)
        self.branches[branch] = sha
        return sha


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hub: HubMimic

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def _json(self, obj: object) -> None:
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _missing(self, what: str) -> None:
        body = json.dumps({"error": what}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Error-Code", "RevisionNotFound" if "revision" in what else "EntryNotFound")
        self.send_header("X-Error-Message", what)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _sha(self, repo: KernelRepo, rev: str) -> Optional[str]:
        rev = unquote(rev)
        return rev if rev in repo.commits else repo.branches.get(rev)

    def _serve(self) -> None:
        hub = self.hub
        path = urlsplit(self.path).path
        hub.requests.append(f"{self.command} {self.path}")
        if hub.offline:
            self.send_error(503)
            return
        m = re.fullmatch(r"/api/organizations/([^/]+)/overview", path)
        if m:
            self._json({"name": m.group(1), "trustedKernelPublisher": m.group(1) in hub.trusted})
            return
        m = re.fullmatch(r"/api/kernels/([^/]+/[^/]+)/(refs|tree|revision)(?:/([^/]+)(?:/(.*))?)?", path)
        if m:
            repo = hub.repos.get(m.group(1))
            if repo is None:
                self._missing(f"repository {m.group(1)} not found")
                return
            kind, rev, sub = m.group(2), m.group(3), (m.group(4) or "").strip("/")
            if kind == "refs":
                self._json({"branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": s}
                                         for b, s in sorted(repo.branches.items())], "tags": [], "converts": []})
                return
            sha = self._sha(repo, rev or "")
            if sha is None:
                self._missing(f"revision {rev} not found")
                return
            files = repo.commits[sha]
            if kind == "revision":
                self._json({"id": m.group(1), "sha": sha, "siblings": [{"rfilename": p} for p in sorted(files)]})
                return
            recursive = "recursive=true" in self.path.lower()
            self._json(_tree(files, sub, recursive))
            return
        m = re.fullmatch(r"/kernels/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            repo = hub.repos.get(m.group(1))
            sha = self._sha(repo, m.group(2)) if repo is not None else None
            data = repo.commits[sha].get(unquote(m.group(3))) if repo is not None and sha is not None else None
            if repo is None or sha is None or data is None:
                self._missing(f"entry {m.group(3)} not found")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-Repo-Commit", sha)
            self.send_header("ETag", f'"{_blob_id(data)}"')
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
            return
        self._missing(f"no route for {path}")

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        self._serve()

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        self._serve()


def _tree(files: dict[str, bytes], sub: str, recursive: bool) -> list[dict[str, object]]:
    prefix = sub + "/" if sub else ""
    out: dict[str, dict[str, object]] = {}
    for p, data in sorted(files.items()):
        if not p.startswith(prefix):
            continue
        rest = p[len(prefix):].split("/")
        for depth in range(1, len(rest)):
            d = prefix + "/".join(rest[:depth])
            if recursive or depth == 1:
                out.setdefault(d, {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0,
                                   "path": d})
        if recursive or len(rest) == 1:
            out[p] = {"type": "file", "oid": _blob_id(data), "size": len(data), "path": p}
    return list(out.values())


class HubMimic(Loopback):
    """Serve *repos* on loopback; point HF_ENDPOINT at :attr:`url`."""

    def __init__(self) -> None:
        self.repos: dict[str, KernelRepo] = {}
        self.trusted: set[str] = {"kernels-community"}
        self.requests: list[str] = []
        self.offline = False
        self._serve(type("H", (_Handler,), {"hub": self}))

    def repo(self, repo_id: str) -> KernelRepo:
        return self.repos.setdefault(repo_id, KernelRepo())
