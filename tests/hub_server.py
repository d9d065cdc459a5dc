"""A Hub-compatible HTTP server on 127.0.0.1 for tests.

It answers `HEAD/GET /{owner}/{name}/resolve/{revision}/{filename}` the way huggingface.co does for
`hf_hub_download`: ETag, X-Repo-Commit and Content-Length on success; 401/404 with the
X-Error-Code that the client turns into RepositoryNotFoundError, GatedRepoError,
RevisionNotFoundError or RemoteEntryNotFoundError.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

_RESOLVE = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)")


@dataclass
class FakeRepo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit -> filename -> content
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit
    token: str | None = None  # private or gated: requests must carry "Authorization: Bearer <token>"
    gated: bool = False  # a request without the token is told the repo is gated, not that it is missing


class HubServer:
    """Serves in-memory repos; `requests` logs "METHOD path" of every request."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[str] = []
        handler = type("Handler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def commit(self, repo_id: str, files: dict[str, bytes], refs: tuple[str, ...] = ("main",)) -> str:
        """Add a commit with `files` to `repo_id` (created if new), point `refs` at it, return its id."""
        repo = self.repos.setdefault(repo_id, FakeRepo())
        digest = hashlib.sha1(f"{repo_id} {len(repo.commits)}".encode())
        for name in sorted(files):
            digest.update(name.encode() + hashlib.sha256(files[name]).digest())
        sha = digest.hexdigest()
        repo.commits[sha] = dict(files)
        repo.refs.update({ref: sha for ref in refs})
        return sha

    def commit_folder(self, repo_id: str, folder: Path, refs: tuple[str, ...] = ("main",)) -> str:
        """Commit every file of `folder` (not recursive)."""
        return self.commit(repo_id, {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}, refs)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: HubServer

    def do_HEAD(self) -> None:
        self._resolve(send_body=False)

    def do_GET(self) -> None:
        self._resolve(send_body=True)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _resolve(self, send_body: bool) -> None:
        self.hub.requests.append(f"{self.command} {self.path}")
        match = _RESOLVE.fullmatch(urlsplit(self.path).path)
        if match is None:
            return self._error(404, None, "Not Found", send_body)
        repo_id, revision, filename = (unquote(part) for part in match.groups())
        repo = self.hub.repos.get(repo_id)
        if repo is None:
            return self._error(401, "RepoNotFound", "Repository not found", send_body)
        if repo.token and self.headers.get("Authorization") != f"Bearer {repo.token}":
            if repo.gated:
                return self._error(401, "GatedRepo", "Access to this repo is restricted", send_body)
            return self._error(401, "RepoNotFound", "Repository not found", send_body)
        commit = repo.refs.get(revision, revision)
        files = repo.commits.get(commit)
        if files is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", send_body)
        if filename not in files:
            return self._error(404, "EntryNotFound", f"{filename} does not exist", send_body, commit)
        body = files[filename]
        self.send_response(200)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _error(self, status: int, code: str | None, message: str, send_body: bool, commit: str | None = None) -> None:
        body = json.dumps({"error": message}).encode()
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
        if commit:
            self.send_header("X-Repo-Commit", commit)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)
