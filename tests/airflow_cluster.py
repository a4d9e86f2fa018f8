"""A private Airflow 3 deployment for tests: Redis broker, api-server, dag-processor, scheduler and Celery workers.

Everything runs as subprocesses on free ports under one temporary directory; the metadata database
is a PostgreSQL database the caller gives (from ``db_servers.pg_server``), the broker a private
``redis-server`` (never the machine's own). Services log to ``<root>/<name>.log``; the scheduler can be
restarted with another executor on the same metadata database, so one deployment runs a DAG under
``LocalExecutor`` and then under ``CeleryExecutor``.

Every Celery worker reports its own hostname to Airflow (``[core] hostname_callable`` →
:func:`worker_hostname`, reading ``HEADRACE_TEST_HOSTNAME``), as two machines would, so a test can
see on which worker each task instance ran.

The REST API is used as a user would use it (``/api/v2``), with the simple auth manager's
"all admins" mode so no login is needed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from support import free_port, require_binaries, wait_until

DAGS = Path(__file__).resolve().parent.parent / "dags"
TESTS = Path(__file__).resolve().parent


def worker_hostname() -> str:
    """The hostname a test Celery worker reports to Airflow (its ``HEADRACE_TEST_HOSTNAME``); the machine's
    name in the other services."""
    return os.environ.get("HEADRACE_TEST_HOSTNAME") or socket.getfqdn()


class Service:
    """One long-running subprocess with its output in ``<root>/<name>.log``."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], root: Path) -> None:
        self.name = name
        self.log = root / f"{name}.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                args, env=env, cwd=root, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} (exit {self.proc.poll()}) ---\n" + "\n".join(text.splitlines()[-n:])

    def terminate(self) -> None:
        """SIGTERM the process group (Airflow and Celery fork children)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def reap(self, deadline: float) -> None:
        """Wait for the process until ``deadline`` (monotonic), then SIGKILL its group (and any child left)."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        self.terminate()
        self.reap(time.monotonic() + timeout)


class ServiceDied(BaseException):
    """A service of the deployment exited; a BaseException, so polling loops do not retry past it."""


class RedisServer:
    """A private ``redis-server`` on a free port, no persistence, files under ``root``."""

    def __init__(self, root: Path) -> None:
        require_binaries("redis-server", why="the CeleryExecutor test needs a Redis broker")
        self.root = root / "redis"
        self.root.mkdir()
        self.port = free_port()
        self.service = Service(
            "redis",
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root),
             "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no"],
            dict(os.environ), root,
        )  # fmt: skip

        def up() -> bool:
            import redis

            if not self.service.alive():
                raise ServiceDied(self.service.tail())
            return bool(redis.Redis(port=self.port, socket_timeout=1).ping())

        try:
            wait_until(up, 30, "redis-server to answer PING", interval=0.1)
        except BaseException:
            self.service.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.service.stop()


class AirflowCluster:
    """An Airflow home under ``root`` on the metadata database ``db_url`` (PostgreSQL), with a Redis broker.

    ``env`` holds every setting (as ``AIRFLOW__…`` variables) shared by all services; ``extra_env``
    (storage credentials, for example) reaches every service and so every task.
    """

    def __init__(self, root: Path, db_url: str, extra_env: dict[str, str] | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(root)
        self.api_port = free_port()
        self.services: dict[str, Service] = {}
        home = root / "airflow_home"
        home.mkdir()
        sa_url = db_url.replace("postgresql://", "postgresql+psycopg2://", 1)
        self.env = {
            **os.environ,
            **(extra_env or {}),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{self.api_port}/execution/",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "airflow_cluster.worker_hostname",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sa_url,
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{self.api_port}",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the runs a test triggers
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + db_url,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",  # one task at a time: a second mapped task must go elsewhere
            "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
            "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(root / "task_logs"),
            "PYTHONPATH": os.pathsep.join([str(DAGS.parent), str(TESTS), os.environ.get("PYTHONPATH", "")]),
        }

    # -- processes ---------------------------------------------------------------------------
    def airflow(self, *args: str, timeout: float = 300) -> str:
        """Run an ``airflow`` CLI command to completion; its stdout."""
        p = subprocess.run(
            [sys.executable, "-m", "airflow", *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        assert p.returncode == 0, f"airflow {' '.join(args)} exited {p.returncode}:\n{p.stderr[-4000:]}"
        return p.stdout

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Service:
        svc = Service(name, [sys.executable, "-m", "airflow", *args], {**self.env, **(env or {})}, self.root)
        self.services[name] = svc
        return svc

    def start_core(self) -> None:
        """api-server (REST and task execution API) and dag-processor; the scheduler is started apart."""
        self.start("api-server", "api-server", "--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1")
        self.start("dag-processor", "dag-processor")

    def start_scheduler(self, executor: str) -> None:
        old = self.services.pop("scheduler", None)
        if old is not None:
            old.stop()
        self.start("scheduler", "scheduler", env={"AIRFLOW__CORE__EXECUTOR": executor})

    def start_celery_worker(self, name: str) -> None:
        """A Celery worker node ``name@…`` (one process) reporting hostname ``name`` to Airflow."""
        self.start(
            name,
            "celery", "worker", "--celery-hostname", f"{name}@%h", "--concurrency", "1", "--skip-serve-logs",
            "--without-gossip", "--without-mingle",
            env={"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor", "HEADRACE_TEST_HOSTNAME": name},
        )  # fmt: skip

    def celery_workers_ready(self, names: list[str]) -> bool:
        """Whether every named worker answers a Celery ping through the broker."""
        from celery import Celery

        app = Celery(broker=self.redis.url)
        try:
            replies = app.control.ping(timeout=1.0) or []
        finally:
            app.close()
        seen = {node.split("@", 1)[0] for reply in replies for node in reply}
        return set(names) <= seen

    def check_alive(self) -> None:
        """Fail (with the dead services' output) when a service has exited."""
        dead = [s for s in self.services.values() if not s.alive()]
        if dead:
            raise ServiceDied("\n".join(s.tail() for s in dead))

    def poll(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """:func:`support.wait_until` that fails at once when a service dies, with every service's log
        tail on a timeout."""

        def check() -> Any:
            self.check_alive()
            return predicate()

        try:
            return wait_until(check, timeout, what, interval=0.5)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def logs(self, n: int = 40) -> str:
        return "\n".join(s.tail(n) for s in self.services.values())

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM every service at once, SIGKILL what is left after ``grace`` seconds; then the broker."""
        services = list(self.services.values())
        for svc in services:
            svc.terminate()
        deadline = time.monotonic() + grace
        for svc in services:
            svc.reap(deadline)
        self.redis.stop()

    # -- REST API ----------------------------------------------------------------------------
    def api(self, method: str, path: str, **kw: Any) -> Any:
        r = httpx.request(method, f"http://127.0.0.1:{self.api_port}/api/v2{path}", timeout=30, **kw)
        assert r.status_code < 300, f"{method} {path}: {r.status_code} {r.text[:2000]}"
        return r.json()

    def wait_api(self, timeout: float = 120) -> None:
        def up() -> bool:
            return httpx.get(f"http://127.0.0.1:{self.api_port}/api/v2/version", timeout=2).status_code == 200

        self.poll(up, timeout, "the api-server to answer")

    def wait_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Until the dag-processor has serialized ``dag_id`` (no import errors) and it is unpaused."""

        def parsed() -> bool:
            errors = self.api("GET", "/importErrors")["import_errors"]
            assert not errors, errors
            return not self.api("GET", f"/dags/{dag_id}")["is_paused"]

        self.poll(parsed, timeout, f"DAG {dag_id} to be parsed")

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> str:
        body = {"dag_run_id": run_id, "logical_date": None, "conf": conf}
        return str(self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        """Until the run finishes; its final state (the services' logs in the message on a timeout)."""

        def finished() -> str | None:
            state = str(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"])
            return state if state in {"success", "failed"} else None

        state: str = self.poll(finished, timeout, f"run {run_id} to finish")
        return state

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        out = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
        return list(out["task_instances"])
