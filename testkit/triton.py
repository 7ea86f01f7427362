"""Run the real ``tritonserver`` from the nvidia-pytriton wheel on loopback, for tests.

The wheel's binary is not built for this interpreter's environment, so the launch has to supply
what PyTriton normally sets up: a backend directory with the Python-backend stub that matches this
interpreter, this interpreter's libpython ahead of the system one, and a ``python3`` on PATH whose
environment has numpy<2 (see e2e/triton/install.sh).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTALL_SCRIPT = REPO_ROOT / "e2e" / "triton" / "install.sh"
BINARY_ENV = "MODELPILOT_TRITONSERVER"
STUB_ENV_ENV = "MODELPILOT_TRITON_STUB_ENV"
LOOPBACK = "127.0.0.1"


class TritonUnavailable(RuntimeError):
    """The tritonserver binary could not be found or installed; tests should skip, not fail."""


class TritonStartError(RuntimeError):
    """tritonserver was found but did not become ready; the message carries its log tail."""


@dataclass(frozen=True)
class TritonHandle:
    """A running tritonserver. ``*_address`` are host:port as tritonclient expects them."""

    url_http: str
    url_grpc: str
    url_metrics: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def http_address(self) -> str:
        return self.url_http.removeprefix("http://")

    @property
    def grpc_address(self) -> str:
        return self.url_grpc

    def log_tail(self, lines: int = 60) -> str:
        return _tail(self.log_path, lines)


@functools.cache
def tritonserver_binary() -> Path:
    """Locate the binary: ``$MODELPILOT_TRITONSERVER`` or the (idempotent) install script's output."""
    override = os.environ.get(BINARY_ENV)
    if override:
        path = Path(override)
        if not os.access(path, os.X_OK):
            raise TritonUnavailable(f"${BINARY_ENV}={override} is not an executable file")
        return path
    try:
        done = subprocess.run(
            ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TritonUnavailable(f"{INSTALL_SCRIPT} could not run: {exc}") from exc
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise TritonUnavailable(
            f"{INSTALL_SCRIPT} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}"
        )
    path = Path(lines[-1])
    if not os.access(path, os.X_OK):
        raise TritonUnavailable(f"{INSTALL_SCRIPT} printed {path}, which is not executable")
    return path


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: all sockets are held open until every port is chosen."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((LOOPBACK, 0))
        return [sock.getsockname()[1] for sock in socks]


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<no log at {path}: {exc}>"


def _flag(args: Sequence[str], name: str) -> str | None:
    """Value of the last ``--name=value`` in args: tritonserver, too, keeps the last one."""
    value = None
    for arg in args:
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
    return value


def _stub_backend_directory(binary: Path, workdir: Path) -> Path:
    """A backend directory whose python backend carries the stub built for this interpreter.

    The wheel ships one stub per Python version beside the backends; PyTriton copies the right one
    in at start. Symlinks do the same here without touching the shared install.
    """
    dist = binary.resolve().parent.parent
    stub = dist / "python_backend_stubs" / f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub /= "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonUnavailable(f"the wheel has no Python-backend stub for this interpreter: {stub}")
    backends = workdir / "backends"
    for backend in sorted((dist / "backends").iterdir()):
        target = backends / backend.name
        target.mkdir(parents=True)
        for item in backend.iterdir():
            (target / item.name).symlink_to(item)
    (backends / "python" / "triton_python_backend_stub").symlink_to(stub)
    return backends


def stub_environment(binary: Path) -> Path:
    """The venv install.sh made for this interpreter's stub: numpy<2, which the stub's ABI needs."""
    override = os.environ.get(STUB_ENV_ENV)
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    env = Path(override) if override else binary.resolve().parents[3] / f"stub-env-{version}"
    if not (env / "bin" / "python3").exists():
        raise TritonUnavailable(f"no Python-backend environment at {env}; run {INSTALL_SCRIPT}")
    return env


def _environment(stub_env: Path) -> dict[str, str]:
    """Make the stub embed this interpreter's libpython and run models in ``stub_env``.

    The stub ignores PYTHONPATH; like PyTriton, it picks its environment from the first ``python3``
    on PATH. The system libpython3.11 is ABI-compatible but crashes in multiprocessing when mixed
    with this interpreter's standard library, hence LD_LIBRARY_PATH.
    """
    env = dict(os.environ)

    def prepend(name: str, *items: str) -> None:
        current = [p for p in env.get(name, "").split(os.pathsep) if p]
        env[name] = os.pathsep.join(dict.fromkeys([*items, *current]))

    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        prepend("LD_LIBRARY_PATH", libdir)
    prepend("PATH", str(stub_env / "bin"))
    env.pop("PYTHONHOME", None)
    return env


def _wait_ready(process: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise TritonStartError(
                f"tritonserver exited with {process.returncode} before it was ready; log {log_path}:\n"
                + _tail(log_path, 60)
            )
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            raise TritonStartError(
                f"tritonserver not ready after {timeout:.0f}s; log {log_path}:\n" + _tail(log_path, 60)
            )
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM lets Triton unload models and stop its stubs; the group kill catches any stragglers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    # The server was started in its own session, so its pid is the group of it and its stubs.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextlib.contextmanager
def running_tritonserver(
    model_repository: Path,
    *,
    args: Sequence[str],
    ready_timeout: float = 90.0,
    stop_grace: float = 15.0,
    log_path: Path | None = None,
) -> Iterator[TritonHandle]:
    """Start tritonserver with ``args``, yield once ``/v2/health/ready`` answers, then stop it.

    ``args`` are used as given; only what this install needs is added: ``--model-repository``,
    ports and loopback addresses when absent, the stub backend directory, and a shared-memory
    prefix unique to this server so parallel servers do not collide.
    """
    binary = tritonserver_binary()
    stub_env = stub_environment(binary)
    workdir = Path(tempfile.mkdtemp(prefix="modelpilot-triton-"))
    log_path = log_path or workdir / "tritonserver.log"
    full = list(args)
    if _flag(full, "model-repository") is None:
        full.append(f"--model-repository={model_repository}")
    missing = [name for name in ("http-port", "grpc-port", "metrics-port") if _flag(full, name) is None]
    full += [f"--{name}={port}" for name, port in zip(missing, free_ports(len(missing)), strict=True)]
    for name in ("http-address", "grpc-address", "metrics-address"):
        if _flag(full, name) is None:
            full.append(f"--{name}={LOOPBACK}")
    if _flag(full, "backend-directory") is None:
        full.append(f"--backend-directory={_stub_backend_directory(binary, workdir)}")
    # The python backend names its shared-memory regions by prefix: keep servers apart, and know
    # which regions to remove if the server has to be killed before it cleans up.
    shm_prefix = f"modelpilot{os.getpid()}p{_flag(full, 'http-port')}_"
    full.append(f"--backend-config=python,shm-region-prefix-name={shm_prefix}")

    host = {name: _flag(full, f"{name}-address") for name in ("http", "grpc", "metrics")}
    handle_urls = {
        "url_http": f"http://{host['http']}:{_flag(full, 'http-port')}",
        "url_grpc": f"{host['grpc']}:{_flag(full, 'grpc-port')}",
        "url_metrics": f"http://{host['metrics']}:{_flag(full, 'metrics-port')}/metrics",
    }
    ok = False
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(binary), *full],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_environment(stub_env),
            cwd=workdir,
            start_new_session=True,
        )
    try:
        _wait_ready(process, handle_urls["url_http"], log_path, ready_timeout)
        yield TritonHandle(process=process, log_path=log_path, **handle_urls)
        ok = True
    finally:
        _stop(process, stop_grace)
        for region in Path("/dev/shm").glob(f"{shm_prefix}*"):
            region.unlink(missing_ok=True)
        if ok and log_path.is_relative_to(workdir):
            shutil.rmtree(workdir, ignore_errors=True)
        elif ok:
            shutil.rmtree(workdir / "backends", ignore_errors=True)
