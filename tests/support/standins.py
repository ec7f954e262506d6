"""Loopback HTTP servers that tests talk to in place of what cannot run here.

- ``FaultyProxy``: between boto3 and the local moto S3 server, failing or dropping chosen requests.
- ``KfpStandIn``: the KFP API server's v2beta1 REST endpoints (a real one needs Kubernetes).
- ``RegistryStandIn``: the Kubeflow Model Registry's REST API (a real one needs Kubernetes and a database).
- ``KubeStandIn``: the Kubernetes API calls of the TrainJob launcher, with a TrainJob whose status walks
  through the states a test scripts (no cluster, Kubeflow Trainer or Kueue runs here).

The stand-ins keep what they are sent in memory, answer the calls the real clients make, and record
every request for the test to read back. All listen on 127.0.0.1 only and stop with the test.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class LoopbackServer:
    """Serves ``handler`` on 127.0.0.1 (a free port) in a thread, as a context manager."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # a short poll: shutdown() waits for it (0.5 s by default, per test)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


class RestStandIn(LoopbackServer):
    """A JSON REST API: records every request and answers with ``route`` (a str answer is sent as text)."""

    prefix = ""  # taken off the path before routing

    def __init__(self):
        self.requests: list[dict] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                url = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                body = standin.parse(raw, self.headers.get("Content-Type", ""))
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                auth = self.headers.get("Authorization")
                standin.requests.append({"method": self.command, "path": url.path, "query": query, "body": body, "auth": auth})
                status, answer = standin.route(self.command, url.path.removeprefix(standin.prefix), query, body)
                text = isinstance(answer, str)
                data = answer.encode() if text else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _handle

        super().__init__(Handler)

    @staticmethod
    def parse(raw: bytes, content_type: str):
        """The request body: JSON (the stand-ins' APIs speak it), or None."""
        return json.loads(raw) if raw else None

    def route(self, method: str, path: str, query: dict, body) -> tuple[int, dict | str]:
        raise NotImplementedError


Fault = Callable[[str, str], str | None]  # (method, path) -> "fail" | "error" | "drop" | None


class FaultyProxy(LoopbackServer):
    def __init__(self, upstream: str, fault: Fault):
        self.upstream = urlsplit(upstream)
        self.fault = fault
        self.requests: list[tuple[str, str, str]] = []  # (method, path, outcome)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    body = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return body
                return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))

            def _handle(self):
                body = self._body()
                outcome = proxy.fault(self.command, self.path) or "forward"
                proxy.requests.append((self.command, self.path, outcome))
                if outcome == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if outcome in ("fail", "error"):
                    status = 503 if outcome == "fail" else 500
                    payload = b"<Error><Code>ServiceUnavailable</Code><Message>injected</Message></Error>"
                    if outcome == "error":
                        payload = payload.replace(b"ServiceUnavailable", b"InternalError")
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "content-length")}
                headers.pop("Expect", None)
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=30)
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                self.send_response(response.status)
                for k, v in response.getheaders():
                    if k.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(k, v)
                # a HEAD answer keeps the object's length and has no body
                length = response.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle  # PATCH: an OCI registry's blob upload

        super().__init__(Handler)


API = "/apis/v2beta1"
NOW = "2026-11-24T00:00:00Z"


class KfpStandIn(RestStandIn):
    prefix = API

    @staticmethod
    def parse(raw: bytes, content_type: str):
        return json.loads(raw) if raw and "json" in content_type else _multipart(raw, content_type)

    def __init__(self):
        self.pipelines: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.experiments: dict[str, dict] = {}
        self.runs: dict[str, dict] = {}
        self.recurring: dict[str, dict] = {}
        self.run_states = ["RUNNING", "SUCCEEDED"]  # what successive GETs of a run report
        self.refuse: tuple[int, str] | None = None  # (status, error message): every request answered so
        self._next = 0
        super().__init__()

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
        if self.refuse:
            return self.refuse[0], {"error_message": self.refuse[1], "code": 16}
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


REGISTRY_API = "/api/model_registry/v1"


class RegistryStandIn(RestStandIn):
    prefix = REGISTRY_API

    def __init__(self):
        self.models: dict[str, dict] = {}
        self.versions: dict[str, dict] = {}
        self.artifacts: dict[str, dict] = {}
        self.links: dict[str, list[str]] = {}  # version id -> artifact ids
        self._next = 0
        super().__init__()

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


TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/{ns}/trainjobs"


def trainjob_status(state: str) -> dict:
    """The status a Kubeflow Trainer TrainJob shows in each state (conditions as the Trainer sets them)."""

    def condition(kind: str, status: str, reason: str, message: str) -> dict:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": "2026-11-25T00:00:00Z",
        }

    def jobs(active: int = 0, ready: int = 0, succeeded: int = 0, failed: int = 0) -> list[dict]:
        counts = {"active": active, "ready": ready, "succeeded": succeeded, "failed": failed, "suspended": 0}
        return [{"name": "node", **counts}]

    resumed = condition("Suspended", "False", "Resumed", "TrainJob is resumed")
    return {
        "queued": {"conditions": [condition("Suspended", "True", "Suspended", "TrainJob is suspended")]},
        "starting": {"conditions": [resumed], "jobsStatus": jobs(active=1)},
        "running": {"conditions": [resumed], "jobsStatus": jobs(active=1, ready=1)},
        "succeeded": {
            "conditions": [resumed, condition("Complete", "True", "JobSetCompleted", "jobset completed successfully")],
            "jobsStatus": jobs(succeeded=1),
        },
        "failed": {
            "conditions": [
                resumed,
                condition("Failed", "True", "JobSetFailed", "jobset failed: node 1 exited with code 1 (OOMKilled)"),
            ],
            "jobsStatus": jobs(failed=1),
        },
        "evicted": {
            "conditions": [condition("Suspended", "True", "Preempted", "Preempted to accommodate a higher priority workload")]
        },
    }[state]


class KubeStandIn(RestStandIn):
    """TrainJobs, their pods and node 0's log. ``states``: the state each successive GET of a TrainJob shows
    (the last one repeats), or a function of the job and the number of GETs so far."""

    def __init__(self, states: list[str] | Callable[[dict, int], str], log: str = "", namespace: str = "team-a"):
        self.states = states
        self.log = log
        self.namespace = namespace
        self.jobs: dict[str, dict] = {}
        self.gets: dict[str, int] = {}
        super().__init__()

    def state(self, name: str, shown: bool = False) -> str:
        """The state the next GET shows, or (``shown``) the one the last GET showed (what the pods are in)."""
        n = max(self.gets.get(name, 0) - 1, 0) if shown else self.gets.get(name, 0)
        if callable(self.states):
            return self.states(self.jobs[name], n)
        return self.states[min(n, len(self.states) - 1)]

    @staticmethod
    def _status(code: int, reason: str, message: str) -> tuple[int, dict]:
        return code, {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": reason,
            "message": message,
            "code": code,
        }

    def route(self, method: str, path: str, query: dict, body) -> tuple[int, dict | str]:
        jobs = TRAINJOBS.format(ns=self.namespace)
        if path == jobs and method == "POST":
            name = body["metadata"]["name"]
            if name in self.jobs:
                return self._status(409, "AlreadyExists", f'trainjobs.trainer.kubeflow.org "{name}" already exists')
            self.jobs[name] = body
            self.gets[name] = 0
            return 201, body
        if path.startswith(jobs + "/"):
            name = path.removeprefix(jobs + "/")
            if name not in self.jobs:
                return self._status(404, "NotFound", f'trainjobs.trainer.kubeflow.org "{name}" not found')
            if method == "DELETE":
                del self.jobs[name]
                return 200, {"kind": "Status", "status": "Success"}
            state = self.state(name)
            self.gets[name] = self.gets.get(name, 0) + 1
            return 200, {**self.jobs[name], "status": trainjob_status(state)}
        if path == f"/api/v1/namespaces/{self.namespace}/pods" and method == "GET":
            return 200, {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {},
                "items": self._pods(query.get("labelSelector", "")),
            }
        match = re.fullmatch(rf"/api/v1/namespaces/{self.namespace}/pods/([^/]+)/log", path)
        if match and method == "GET":
            return 200, self.log
        return self._status(404, "NotFound", f"{method} {path}")

    def _pods(self, selector: str) -> list[dict]:
        wanted = dict(part.split("=", 1) for part in selector.split(",") if part)
        pods = []
        for name, job in self.jobs.items():
            state = self.state(name, shown=True)
            phase = {"running": "Running", "succeeded": "Succeeded", "failed": "Failed"}.get(state, "Pending")
            for index in range(job["spec"]["trainer"].get("numNodes", 1)):
                labels = {
                    "jobset.sigs.k8s.io/jobset-name": name,
                    "jobset.sigs.k8s.io/replicatedjob-name": "node",
                    "batch.kubernetes.io/job-completion-index": str(index),
                }
                if all(labels.get(k) == v for k, v in wanted.items()):
                    container = {"name": "node", "restartCount": 0, "ready": phase == "Running", "image": "", "imageID": ""}
                    status = {"phase": phase, "containerStatuses": [container]}
                    if state == "starting" and index > 0:  # node 0 got its GPUs, node 1 waits for some
                        message = "0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
                        status["conditions"] = [
                            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
                        ]
                    pods.append({"metadata": {"name": f"{name}-node-0-{index}-x7k2p", "labels": labels}, "status": status})
        return pods

    def calls(self) -> set[tuple[str, str, str]]:
        """Every call made, as the (API group, resource, verb) RBAC checks."""
        verbs = {"POST": "create", "DELETE": "delete"}
        out = set()
        for r in self.requests:
            parts = r["path"].strip("/").split("/")
            group = "" if parts[0] == "api" else parts[1]
            rest = parts[parts.index("namespaces") + 2 :]
            resource = "/".join([rest[0], *rest[2:]]) if len(rest) > 2 else rest[0]
            verb = verbs.get(r["method"]) or ("get" if len(rest) > 1 else "list")
            out.add((group, resource, verb))
        return out
