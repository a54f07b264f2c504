"""A throwaway PostgreSQL cluster for the tests: loopback only, trust auth, gone at the end.

initdb refuses to run as root, so as root the cluster runs as the `postgres` system user (the
Debian package creates it). The server gets `PR_SET_PDEATHSIG` like the dev stack's children,
set after the change of user (a change of credentials would clear it), so a killed pytest leaves
no server behind.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from voice_agent.devstack.processes import _die_with_parent, free_port

INSTALL_HINT = (
    "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); run `make setup` "
    "or `apt-get install postgresql`"
)

INITDB_OPTIONS = ("-U", "postgres", "--auth=trust", "--no-sync", "--encoding=UTF8", "--locale=C")
# Durability is worthless for a cluster deleted at the end of the session; speed is not.
SERVER_OPTIONS = (
    *("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"),
    *("-c", "max_connections=60"),
)


def find_postgres_bin() -> Path | None:
    """The newest installed PostgreSQL's bin directory, or None."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return candidates[-1].parent if candidates else None


def _run_as(user: pwd.struct_passwd | None) -> dict[str, Any]:
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


class PostgresCluster:
    """A cluster in a temporary directory that can be stopped and started again on its port."""

    def __init__(self, bin_dir: Path, log_file: Path) -> None:
        self.bin_dir = bin_dir
        self.log_file = log_file
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        # Not under pytest's temp root: that is mode 0700 for root, and the server runs as
        # postgres.
        self.root = Path(tempfile.mkdtemp(prefix="voice-agent-pg-"))
        self.data, self.sockets = self.root / "data", self.root / "sockets"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its `postgresql://` URL."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        """Create the cluster's files (initdb)."""
        self.sockets.mkdir()
        if self.user is not None:
            for path in (self.root, self.sockets):
                os.chown(path, self.user.pw_uid, self.user.pw_gid)
        with self.log_file.open("ab") as log:
            subprocess.run(
                [str(self.bin_dir / "initdb"), "-D", str(self.data), *INITDB_OPTIONS],
                check=True,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=120,
                cwd=self.root,
                **_run_as(self.user),
            )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bin_dir / "postgres"),
                    *("-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port)),
                    *("-k", str(self.sockets)),
                    *SERVER_OPTIONS,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # runs after the change of user
                cwd=self.root,
                **_run_as(self.user),
            )
        _wait_ready(self.bin_dir, self.port, self.proc, self.log_file)

    def stop(self) -> None:
        """Stop the server (its data stays)."""
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def remove(self) -> None:
        """Stop the server and delete the cluster."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running_cluster(bin_dir: Path, log_file: Path) -> Iterator[PostgresCluster]:
    """A fresh cluster, started, on a free loopback port; removed at the end."""
    cluster = PostgresCluster(bin_dir, log_file)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@contextlib.contextmanager
def postgres_cluster(bin_dir: Path, log_file: Path) -> Iterator[str]:
    """Run a fresh cluster on a free loopback port; its `postgresql://` URL."""
    with running_cluster(bin_dir, log_file) as cluster:
        yield cluster.url


def _wait_ready(bin_dir: Path, port: int, proc: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited with {proc.returncode}; see {log_file}")
        probe = subprocess.run(
            [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)],
            check=False,
            timeout=10,
        )
        if probe.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"postgres not ready after 60 s; see {log_file}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (SIGINT: disconnect clients, stop), then SIGKILL the group if it hangs."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
