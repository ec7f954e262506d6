"""A stand-in for the Kubeflow Model Registry REST API (v1), on loopback, for tests.

No Model Registry server can run here (it needs a database and Kubernetes), so the official Python client
talks to this: an in-memory store of registered models, versions and model artifacts that answers the
calls the client makes and records every request (method, path, query, JSON body) for the test to check.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

BASE = "/api/model_registry/v1"


class RegistryStandIn:
    def __init__(self):
        self.requests: list[dict] = []
        self.models: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.artifacts: dict[str, dict] = {}
        self.links: dict[str, list[str]] = {}  # version id -> artifact ids
        self._next = 0
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length", 0) or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                standin.requests.append(
                    {
                        "method": self.command,
                        "path": url.path,
                        "query": query,
                        "body": body,
                        "auth": self.headers.get("Authorization"),
                    }
                )
                status, answer = standin.route(self.command, url.path.removeprefix(BASE), query, body)
                self._reply(status, answer)

            do_GET = do_POST = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _new(self, kind: str, body: dict, **extra) -> dict:
        self._next += 1
        now = str(int(time.time() * 1000))
        return {**body, **extra, "id": str(self._next), "createTimeSinceEpoch": now, "lastUpdateTimeSinceEpoch": now}

    def route(self, method: str, path: str, query: dict, body: dict | None) -> tuple[int, dict]:
        missing = (404, {"code": "404", "message": "not found"})
        parts = path.strip("/").split("/")
        if method == "GET" and parts == ["registered_model"]:
            found = [m for m in self.models.values() if m["name"] == query.get("name")]
            return (200, found[0]) if found else missing
        if method == "GET" and parts == ["registered_models"]:  # the client's connection check
            items = list(self.models.values())
            return 200, {"items": items, "size": len(items), "pageSize": max(len(items), 1), "nextPageToken": ""}
        if method == "POST" and parts == ["registered_models"]:
            model = self._new("model", body, state="LIVE")
            self.models[model["id"]] = model
            return 201, model
        if method == "GET" and parts[0] == "registered_models" and len(parts) == 2:
            return (200, self.models[parts[1]]) if parts[1] in self.models else missing
        if method == "GET" and parts == ["model_version"]:
            found = [
                v
                for v in self.versions.values()
                if v["name"] == query.get("name") and v["registeredModelId"] == query.get("parentResourceId")
            ]
            return (200, found[0]) if found else missing
        if method == "POST" and parts == ["model_versions"]:
            version = self._new("version", body, state="LIVE")
            self.versions[version["id"]] = version
            return 201, version
        if parts[0] == "model_versions" and len(parts) == 2 and parts[1] in self.versions:
            if method == "PATCH":
                self.versions[parts[1]].update(body)
            return 200, self.versions[parts[1]]
        if parts[0] == "model_versions" and len(parts) == 3 and parts[2] == "artifacts":
            if method == "POST":
                artifact = self._new("artifact", body, state="LIVE")
                self.artifacts[artifact["id"]] = artifact
                self.links.setdefault(parts[1], []).append(artifact["id"])
                return 200, artifact
            items = [self.artifacts[a] for a in self.links.get(parts[1], [])]
            return 200, {"items": items, "size": len(items), "pageSize": max(len(items), 1), "nextPageToken": ""}
        if method == "GET" and parts == ["model_artifact"]:
            ids = self.links.get(query.get("parentResourceId", ""), [])
            found = [self.artifacts[a] for a in ids if self.artifacts[a]["name"] == query.get("name")]
            return (200, found[0]) if found else missing
        if parts[0] in ("model_artifacts", "artifacts") and len(parts) == 2 and parts[1] in self.artifacts:
            if method == "PATCH":
                self.artifacts[parts[1]].update(body)
            return 200, self.artifacts[parts[1]]
        return missing

    def __enter__(self) -> RegistryStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
