"""A stand-in for the KFP API server's v2beta1 REST endpoints, on loopback, for tests.

A real KFP API server needs Kubernetes, which does not run here; the real ``kfp.Client`` talks to this
instead. It keeps pipelines, versions, experiments, runs and recurring runs in memory, answers the calls
the client makes, and records every request (method, path, query, body) for the test to read back.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

API = "/apis/v2beta1"
NOW = "2026-11-24T00:00:00Z"


class KfpStandIn:
    def __init__(self):
        self.requests: list[dict] = []
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}
        self.run_states = ["RUNNING", "SUCCEEDED"]  # what successive GETs of a run report
        self._next = 0
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                url = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                content_type = self.headers.get("Content-Type", "")
                body = json.loads(raw) if raw and "json" in content_type else _multipart(raw, content_type)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                standin.requests.append({"method": self.command, "path": url.path, "query": query, "body": body})
                status, answer = standin.route(self.command, url.path.removeprefix(API), query, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _id(self, kind: str) -> str:
        self._next += 1
        return f"{kind}-{self._next}"

    @staticmethod
    def _filtered(items: list[dict], query: dict, field: str = "display_name") -> list[dict]:
        """The ``filter`` query the client sends for lookups by name: a JSON predicate on one field."""
        if "filter" not in query:
            return items
        predicates = json.loads(query["filter"]).get("predicates", [])
        wanted = {p["key"]: p.get("string_value", p.get("stringValue")) for p in predicates}
        return [i for i in items if all(i.get(field if k in ("name", "display_name") else k) == v for k, v in wanted.items())]

    def route(self, method: str, path: str, query: dict, body) -> tuple[int, dict]:
        missing = (404, {"error_message": "not found", "code": 5})
        if path == "/healthz":
            return 200, {"multi_user": False}
        if method == "POST" and path == "/pipelines/upload":
            pid = self._id("pipeline")
            pipeline = {"pipeline_id": pid, "display_name": query.get("name"), "created_at": NOW}
            self.pipelines[pid] = pipeline
            vid = self._id("version")
            self.versions[vid] = {
                "pipeline_id": pid,
                "pipeline_version_id": vid,
                "display_name": query.get("name"),
                "created_at": NOW,
            }
            return 200, pipeline
        if method == "POST" and path == "/pipelines/upload_version":
            vid = self._id("version")
            version = {
                "pipeline_id": query.get("pipelineid"),
                "pipeline_version_id": vid,
                "display_name": query.get("name"),
                "created_at": NOW,
            }
            self.versions[vid] = version
            return 200, version
        if method == "GET" and path == "/pipelines":
            items = self._filtered(list(self.pipelines.values()), query)
            return 200, {"pipelines": items, "total_size": len(items)}
        if method == "GET" and (m := re.fullmatch(r"/pipelines/([^/]+)/versions", path)):
            items = self._filtered([v for v in self.versions.values() if v["pipeline_id"] == m.group(1)], query)
            return 200, {"pipeline_versions": items, "total_size": len(items)}
        if method == "GET" and path == "/experiments":
            items = self._filtered(list(self.experiments.values()), query)
            return 200, {"experiments": items, "total_size": len(items)}
        if method == "POST" and path == "/experiments":
            experiment = {**body, "experiment_id": self._id("experiment"), "created_at": NOW}
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        if method == "POST" and path == "/runs":
            run = {**body, "run_id": self._id("run"), "state": "PENDING", "created_at": NOW}
            self.runs[run["run_id"]] = run
            return 200, run
        if method == "GET" and (m := re.fullmatch(r"/runs/([^/:]+)", path)):
            run = self.runs.get(m.group(1))
            if run is None:
                return missing
            if self.run_states:
                run["state"] = self.run_states.pop(0)
            return 200, run
        if method == "POST" and path == "/recurringruns":
            recurring = {**body, "recurring_run_id": self._id("recurring"), "status": "ENABLED", "created_at": NOW}
            self.recurring[recurring["recurring_run_id"]] = recurring
            return 200, recurring
        if method == "GET" and path == "/recurringruns":
            items = list(self.recurring.values())
            return 200, {"recurringRuns": items, "total_size": len(items)}
        if m := re.fullmatch(r"/recurringruns/([^/:]+)(?::(enable|disable))?", path):
            recurring = self.recurring.get(m.group(1))
            if recurring is None:
                return missing
            if method == "POST" and m.group(2):
                recurring["status"] = "ENABLED" if m.group(2) == "enable" else "DISABLED"
                return 200, {}
            if method == "DELETE":
                del self.recurring[m.group(1)]
                return 200, {}
            return 200, recurring
        return missing

    def __enter__(self) -> KfpStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def _multipart(raw: bytes, content_type: str) -> dict:
    """The uploaded file of a multipart request (pipeline uploads), by field name."""
    if not raw or "boundary=" not in content_type:
        return {}
    boundary = content_type.split("boundary=")[1].encode()
    fields = {}
    for part in raw.split(b"--" + boundary):
        head, _, data = part.partition(b"\r\n\r\n")
        if m := re.search(rb'name="([^"]+)"', head):
            fields[m.group(1).decode()] = data.rstrip(b"\r\n").decode(errors="replace")
    return fields
