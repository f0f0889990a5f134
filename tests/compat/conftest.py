"""Fixtures for the client-compatibility suite.

This suite drives a real `nuage serve` process with real S3 clients (aws CLI v1,
boto3, rclone, s3cmd, curl). It builds nothing: the binary comes from
`NUAGE_BIN` (default `$CARGO_TARGET_DIR/debug/nuage`, with `CARGO_TARGET_DIR`
defaulting to `$HOME/.cache/nuage-target`); `scripts/test.sh` builds it first.

What this file owns: starting and stopping servers, reading their credentials,
and small helpers to run client processes with an isolated configuration (no
`~/.aws`, no `~/.s3cfg`, no rclone.conf from the developer's machine can leak in).

What it must never do: sleep for a fixed time. Every wait is on a condition
with a deadline.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import re
import secrets
import shutil
import subprocess
import threading
import time
import tomllib
from pathlib import Path
from typing import Iterator, Sequence

import pytest

# Deadline for the server to print its listening line. A debug build on a
# loaded two-core machine opens its metadata store in well under a second;
# 60 s only guards against hanging forever.
SERVER_START_TIMEOUT_S = 60.0
# Deadline for the server to exit after SIGTERM before it gets SIGKILL.
SERVER_STOP_TIMEOUT_S = 10.0
# Deadline for any single client command. The slowest step is a 100 MiB
# transfer over loopback, a few seconds; 240 s catches a hang.
CLIENT_TIMEOUT_S = 240.0
# How many lines of server log to attach to a failing test's report.
SERVER_LOG_TAIL_LINES = 80

LISTENING_RE = re.compile(r"^nuage: S3 endpoint listening on (http://127\.0\.0\.1:(\d+))\s*$")


def _default_nuage_bin() -> Path:
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "nuage-target"
    )
    return Path(target) / "debug" / "nuage"


@dataclasses.dataclass(frozen=True)
class Server:
    """A running `nuage serve` and what a client needs to talk to it."""

    endpoint: str  # http://127.0.0.1:PORT
    port: int
    data_dir: Path
    log_path: Path
    access_key_id: str
    secret_access_key: str
    region: str
    credentials_path: Path

    def log_tail(self, lines: int = SERVER_LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as error:
            return f"(cannot read server log: {error})"
        return "\n".join(text.splitlines()[-lines:])


class _RunningServer:
    """Owns the child process and the thread that copies its output to a log."""

    def __init__(self, nuage_bin: Path, data_dir: Path, log_path: Path, extra_args: Sequence[str]):
        self.args = [
            str(nuage_bin),
            "serve",
            "--data-dir",
            str(data_dir),
            "--listen",
            "127.0.0.1:0",
            *extra_args,
        ]
        self.log_path = log_path
        self._log = open(log_path, "w", buffering=1, encoding="utf-8", errors="replace")
        self._log.write("$ " + " ".join(self.args) + "\n")
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")  # plain text in the log attached to failures
        self.process = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            errors="replace",
            bufsize=1,
        )
        self._lines: "queue.Queue[str | None]" = queue.Queue()
        # The reader thread keeps draining the pipe for the server's whole
        # life, so a chatty server can never block on a full pipe.
        self._reader = threading.Thread(target=self._pump, name="nuage-log", daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._log.write(line)
            self._lines.put(line)
        self._lines.put(None)

    def wait_listening(self, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"nuage did not print its listening line within {timeout_s:.0f} s; "
                    f"log: {self.log_path}"
                )
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                code = self.process.wait()
                raise RuntimeError(
                    f"nuage exited with status {code} before listening; log:\n"
                    + self.log_path.read_text(errors="replace")
                )
            match = LISTENING_RE.match(line.rstrip("\n"))
            if match:
                return match.group(1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=SERVER_STOP_TIMEOUT_S)
        self._log.close()


def _read_credentials(path: Path) -> dict:
    with open(path, "rb") as handle:
        return tomllib.load(handle)


_servers: list[Server] = []


def _start_server(tmp_path_factory: pytest.TempPathFactory, name: str, extra_args: Sequence[str]):
    nuage_bin = Path(os.environ.get("NUAGE_BIN") or _default_nuage_bin())
    if not nuage_bin.is_file():
        pytest.exit(
            f"nuage binary not found at {nuage_bin}: build it (cargo build -p nuage) "
            "or set NUAGE_BIN",
            returncode=2,
        )
    base = tmp_path_factory.mktemp(name)
    data_dir = base / "data"
    data_dir.mkdir()
    running = _RunningServer(nuage_bin, data_dir, base / "server.log", extra_args)
    try:
        endpoint = running.wait_listening(SERVER_START_TIMEOUT_S)
        credentials_path = data_dir / "credentials.toml"
        credentials = _read_credentials(credentials_path)
        server = Server(
            endpoint=endpoint,
            port=int(endpoint.rsplit(":", 1)[1]),
            data_dir=data_dir,
            log_path=running.log_path,
            access_key_id=credentials["access_key_id"],
            secret_access_key=credentials["secret_access_key"],
            region=credentials["region"],
            credentials_path=credentials_path,
        )
    except BaseException:
        running.stop()
        raise
    return running, server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `nuage serve` for the whole session, path-style addressing."""
    running, srv = _start_server(tmp_path_factory, "nuage", [])
    _servers.append(srv)
    try:
        yield srv
    finally:
        running.stop()
        _servers.remove(srv)


@pytest.fixture(scope="session")
def vhost_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second server started with `--domain localhost` for virtual-host tests.

    Separate from `server` so that a broken `--domain` flag fails only the
    virtual-host tests, not the whole suite.
    """
    running, srv = _start_server(tmp_path_factory, "nuage-vhost", ["--domain", "localhost"])
    _servers.append(srv)
    try:
        yield srv
    finally:
        running.stop()
        _servers.remove(srv)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Attach the tail of each running server's log to a failing test's report."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for srv in _servers:
            report.sections.append((f"nuage log ({srv.endpoint}, tail)", srv.log_tail()))


# --- helpers shared by the tests -------------------------------------------


def unique_bucket(prefix: str) -> str:
    """A fresh DNS-compatible bucket name, so tests never share state."""
    return f"{prefix}-{secrets.token_hex(4)}"


@dataclasses.dataclass
class CommandResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.args)}\n-> exit {self.returncode}\n"
            f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}"
        )


def run(args: Sequence[str], env: dict, *, check: bool = True, cwd: Path | None = None,
        timeout_s: float = CLIENT_TIMEOUT_S) -> CommandResult:
    """Run a client command; with `check`, fail the test with full output on non-zero exit."""
    completed = subprocess.run(
        list(args),
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout_s,
    )
    result = CommandResult(list(args), completed.returncode, completed.stdout, completed.stderr)
    if check and result.returncode != 0:
        pytest.fail("client command failed:\n" + result.describe(), pytrace=False)
    return result


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        # Not a skip: a missing client means the suite did not test what it
        # claims to. scripts/install-test-deps.sh installs all of them.
        pytest.fail(f"{name} not found on PATH; run scripts/install-test-deps.sh", pytrace=False)
    return path


def _isolated_env(home: Path) -> dict:
    """The caller's environment minus anything that could point a client elsewhere."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AWS_", "RCLONE_", "S3CMD", "BOTO_"))
        and key not in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")
    }
    env["HOME"] = str(home)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,.localhost"
    return env


@pytest.fixture
def client_home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def aws_env(server: Server, client_home: Path) -> dict:
    """Environment for the aws CLI: credentials, region, path-style, nothing else."""
    env = _isolated_env(client_home)
    config = client_home / "aws-config"
    config.write_text(
        "[default]\n"
        f"region = {server.region}\n"
        "s3 =\n"
        "  addressing_style = path\n"
    )
    env.update(
        AWS_ACCESS_KEY_ID=server.access_key_id,
        AWS_SECRET_ACCESS_KEY=server.secret_access_key,
        AWS_DEFAULT_REGION=server.region,
        AWS_CONFIG_FILE=str(config),
        AWS_SHARED_CREDENTIALS_FILE=str(client_home / "aws-credentials-absent"),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_PAGER="",
    )
    return env
