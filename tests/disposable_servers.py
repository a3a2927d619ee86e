"""Database servers of a test's own, so stopping one (an outage) disturbs nothing else.

Each runs from a temporary folder (its data, socket and log) on a free loopback port, as the
server's system user; the test process must be root to switch to that user (CI runs as root).
Without the server binaries or root the test is skipped, which a CI run (CI=true) does not
allow (``tests/skip_policy.py``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import pymysql
import pytest

from service.demo.generate import recreate_server_database


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_root(what: str) -> None:
    if os.geteuid() != 0 or not shutil.which("runuser"):
        pytest.skip(f"needs root, to run a {what} server of the test's own as its system user")


class DisposableServer(ABC):
    """A server with a superuser that logs in without a password over TCP on 127.0.0.1."""

    superuser: ClassVar[str]
    sync_driver: ClassVar[str]  # SQLAlchemy driver for set-up and MLflow's migrations
    scheme: ClassVar[str]  # the MLflow-style scheme the service is configured with
    admin_database: ClassVar[str]  # a database that always exists ("" = none)

    def __init__(self, prefix: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.port = free_port()

    def url(self, database: str, driver: str | None = None) -> str:
        path = f"/{database}" if database else ""
        return f"{driver or self.scheme}://{self.superuser}@127.0.0.1:{self.port}{path}"

    def create_database(self, name: str) -> str:
        """Create an empty database; return its sync URL (for MLflow's migrations)."""
        recreate_server_database(self.url(self.admin_database, self.sync_driver), name)
        return self.url(name, self.sync_driver)

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    def remove(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class DisposablePostgres(DisposableServer):
    superuser = "postgres"
    sync_driver = "postgresql+psycopg2"
    scheme = "postgresql"
    admin_database = "postgres"

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not bins:
            pytest.skip("needs PostgreSQL's server binaries (/usr/lib/postgresql/*/bin)")
        require_root("PostgreSQL")
        super().__init__("insights-pg-")
        self.bin = Path(bins[-1]).parent
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres("initdb", "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres")

    def _as_postgres(self, tool: str, *args: str) -> None:
        command = ["runuser", "-u", "postgres", "--", str(self.bin / tool), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir}"
        data, log = str(self.dir / "data"), str(self.dir / "log")
        self._as_postgres("pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")


class DisposableMariaDB(DisposableServer):
    """``mariadbd`` on a datadir made by ``mariadb-install-db``, run as user ``mysql``;
    ``--no-defaults`` keeps the machine's my.cnf (port 3306, /var/lib/mysql) out of it."""

    superuser = "root"
    sync_driver = "mysql+pymysql"
    scheme = "mysql"
    admin_database = ""

    def __init__(self) -> None:
        self.mariadbd = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin")
        install = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        if not self.mariadbd or not install:
            pytest.skip("needs MariaDB's server binaries (mariadbd, mariadb-install-db)")
        require_root("MariaDB")
        super().__init__("insights-mariadb-")
        shutil.chown(self.dir, "mysql", "mysql")
        self.process: subprocess.Popen[bytes] | None = None
        subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={self.dir / 'data'}",
                "--user=mysql",
                # root@127.0.0.1 without a password, as the suite's MariaDB is reached.
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )

    @property
    def log(self) -> Path:
        return self.dir / "error.log"

    def start(self) -> None:
        assert self.mariadbd is not None
        argv = [
            self.mariadbd,
            "--no-defaults",
            f"--datadir={self.dir / 'data'}",
            "--user=mysql",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.dir / 'mysqld.sock'}",
            f"--pid-file={self.dir / 'mysqld.pid'}",
            f"--log-error={self.log}",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=32M",  # a dozen traces; the machine is shared
        ]
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + 60
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                pytest.fail(f"mariadbd did not start ({self.process.poll()}):\n{log[-3000:]}")
            time.sleep(0.25)

    def _answers(self) -> bool:
        try:
            pymysql.connect(
                host="127.0.0.1", port=self.port, user="root", connect_timeout=2
            ).close()
        except pymysql.err.OperationalError:
            return False
        return True

    def stop(self) -> None:
        """A normal shutdown (SIGTERM), waited for, of the process this object started."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
