"""Process harness for Flower 1.42 deployment tests (SuperLink, SuperNodes, ``flwr``).

Not a test module: ``tests/flower/test_deployment_security.py`` and later tests of the
real genefl ServerApp/ClientApp import it. Everything runs offline, in a private
work directory, with bounded timeouts, and every process it starts is stopped by PID
when the :class:`Deployment` context exits (also when a test fails).

What Flower 1.42 needs, as read from its installed source and ``--help``:

* ``flower-superlink`` serves the Fleet API (``/v1/fleet/*``, SuperNodes), the Control
  API (``/v1/control/*``, the ``flwr`` CLI) and the Runtime API (the ServerApp's
  SuperExec) over **one** HTTPS port, ``--host``/``--port`` (default 127.0.0.1:8000).
  TLS: ``--ssl-ca-certfile --ssl-certfile --ssl-keyfile``. Node authentication:
  ``--enable-supernode-auth``; public keys are registered at run time with
  ``flwr supernode register KEY.pub CONNECTION`` (the CSV ``--auth-list-public-keys``
  of older releases makes 1.42 exit). It starts its own ``flower-superexec``, which
  connects back to ``--host`` (0.0.0.0 becomes 127.0.0.1), so the server certificate
  needs a SAN for that address.
* ``flower-supernode --superlink HOST:PORT --root-certificates CA
  --auth-supernode-private-key KEY --node-config '...'`` plus a local Runtime API
  (``--host``/``--port``, default 127.0.0.1:9094), unique per SuperNode on one host.
* ``flwr`` reads SuperLink connections from ``$FLWR_HOME/config.toml``
  (``[superlink.NAME] address, root-certificates``); ``flwr run APP NAME``. An app's
  pyproject must not carry ``[tool.flwr.federations]``: ``flwr run`` would migrate it
  into ``config.toml`` and comment it out in the app's own pyproject.
* Offline: ``FLWR_TELEMETRY_ENABLED=0``, ``FLWR_DISABLE_UPDATE_CHECK=1``,
  ``--disable-runtime-dependency-installation`` (SuperLink; on by default there) or
  ``FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1``; SuperNodes install nothing unless
  given ``--allow-runtime-dependency-installation``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CERT_SCRIPT = REPO / "scripts" / "flower_certs.sh"
PING_APP = Path(__file__).resolve().parent / "pingapp"
#: Flower's own executables live next to the interpreter running the tests.
BIN_DIR = Path(sys.executable).parent

OFFLINE_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


class DeploymentError(RuntimeError):
    """A process did not start, answer or finish as expected."""


# --------------------------------------------------------------------------------------
# Prerequisites and credentials
# --------------------------------------------------------------------------------------


def missing_prerequisites() -> str | None:
    """Why the deployment tests cannot run here, or ``None``."""
    if importlib.util.find_spec("flwr") is None:
        return "flwr is not installed (pip install -e '.[flower]')"
    version = importlib.metadata.version("flwr")
    if tuple(int(x) for x in re.findall(r"\d+", version)[:2]) < (1, 42):
        return f"flwr {version} is older than 1.42 (one HTTPS port, CLI-registered node keys)"
    for tool in ("openssl", "bash"):
        if shutil.which(tool) is None:
            return f"`{tool}` not found on PATH (Debian package: {tool})"
    for exe in ("flower-superlink", "flower-supernode", "flower-superexec", "flwr"):
        if not (BIN_DIR / exe).exists() and shutil.which(exe) is None:
            return f"Flower executable `{exe}` not found next to {sys.executable} or on PATH"
    return None


@dataclass(frozen=True)
class Credentials:
    """Files written by ``scripts/flower_certs.sh``."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    node_keys: tuple[Path, ...]  # private keys; the public key is ``path + ".pub"``
    unregistered_key: Path


def make_credentials(
    out_dir: Path, num_nodes: int, sans: Sequence[str] = (), timeout: float = 60
) -> Credentials:
    """Run the certificate script (CA, SuperLink certificate, SuperNode key pairs)."""
    cmd = ["bash", str(CERT_SCRIPT), "-n", str(num_nodes), str(out_dir), *sans]
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise DeploymentError(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    keys = out_dir / "keys"
    return Credentials(
        dir=out_dir,
        ca=out_dir / "ca.crt",
        server_cert=out_dir / "server.pem",
        server_key=out_dir / "server.key",
        node_keys=tuple(keys / f"supernode_{i}" for i in range(1, num_nodes + 1)),
        unregistered_key=keys / "unregistered",
    )


def public_key_pem(private_key: Path) -> str:
    """The SubjectPublicKeyInfo PEM the SuperLink logs for a SuperNode key."""
    from cryptography.hazmat.primitives import serialization as ser

    pub = ser.load_ssh_public_key(Path(f"{private_key}.pub").read_bytes())
    return pub.public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, str]]:
    """``pid -> (ppid, start time)`` for every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), fields[19])
    return table


def _descendants(root: int) -> list[tuple[int, str]]:
    """``(pid, start time)`` of every live descendant of ``root``."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append((pid, table[pid][1]))
        todo.extend(children.get(pid, []))
    return out


def _kill_if_same(pid: int, start: str, sig: int) -> None:
    """Signal ``pid`` only if it is still the process that started at ``start``."""
    now = _proc_table().get(pid)
    if now is not None and now[1] == start:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


@dataclass
class Proc:
    """One started process and its log file."""

    name: str
    popen: subprocess.Popen
    log: Path

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def text(self) -> str:
        """The process's output so far."""
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        """Wait until the log matches ``pattern``; fail if the process exits first."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.text())
            if m:
                return m
            if not self.alive():
                raise DeploymentError(
                    f"{self.name} exited with {self.popen.returncode} before /{pattern}/"
                )
            if time.monotonic() > deadline:
                raise DeploymentError(f"{self.name}: no /{pattern}/ within {timeout:.0f} s")
            time.sleep(0.2)

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit by itself; return its exit status."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise DeploymentError(f"{self.name} still running after {timeout:.0f} s") from exc


@dataclass
class SuperLinkInfo:
    """A started SuperLink and how to reach it."""

    proc: Proc
    address: str  # host:port that SuperNodes and flwr use
    netns: str | None


class Deployment:
    """Start Flower processes in ``workdir``; stop all of them on exit.

    Use as a context manager. ``workdir/logs`` holds one log per process (and the
    output of every ``flwr`` call); on an exception the path and the last lines of
    each log are printed to stderr so that pytest shows them.
    """

    def __init__(self, workdir: Path, creds: Credentials, connection: str = "genefl"):
        self.workdir = Path(workdir)
        self.creds = creds
        self.connection = connection
        self.logs = self.workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []
        self.cli_home = self.workdir / "homes" / "cli"
        #: network namespace the ``flwr`` CLI and health probes run in (None: this one)
        self.cli_netns: str | None = None
        #: extra environment of every process started here (e.g. OMP_NUM_THREADS)
        self.extra_env: dict[str, str] = {}
        self._cli_calls = 0

    # -- environment -------------------------------------------------------------------

    def env(self, home: Path) -> dict[str, str]:
        """Environment of one Flower process: offline, private FLWR_HOME."""
        home.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.update(OFFLINE_ENV)
        env["FLWR_HOME"] = str(home)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.extra_env)
        # The SuperLink and SuperNodes start `flower-superexec` by name.
        env["PATH"] = f"{BIN_DIR}{os.pathsep}{env.get('PATH', '')}"
        return env

    @staticmethod
    def _exe(name: str) -> str:
        path = BIN_DIR / name
        return str(path) if path.exists() else (shutil.which(name) or name)

    def start(
        self, name: str, argv: Sequence[str], *, netns: str | None = None, home: Path
    ) -> Proc:
        """Start ``argv`` (optionally inside a network namespace) in a new session."""
        log = self.logs / f"{name}.log"
        cmd = [*(["ip", "netns", "exec", netns] if netns else []), *argv]
        with open(log, "wb") as out:
            out.write(("$ " + " ".join(cmd) + "\n").encode())
            out.flush()
            popen = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=self.env(home), cwd=self.workdir, start_new_session=True,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    # -- SuperLink ---------------------------------------------------------------------

    def start_superlink(
        self,
        *,
        bind_host: str = "127.0.0.1",
        address_host: str | None = None,
        port: int | None = None,
        netns: str | None = None,
        probe_netns: str | None = None,
        timeout: float = 30,
    ) -> SuperLinkInfo:
        """Start a SuperLink with TLS and SuperNode authentication; wait for /health.

        ``address_host`` is the name SuperNodes and ``flwr`` use (default: bind_host);
        the health probe, run in ``probe_netns`` (default: ``netns``), verifies the
        server certificate against it.
        """
        port = port or free_port()
        c = self.creds
        proc = self.start(
            "superlink",
            [
                self._exe("flower-superlink"),
                "--ssl-ca-certfile", str(c.ca),
                "--ssl-certfile", str(c.server_cert),
                "--ssl-keyfile", str(c.server_key),
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",
                "--host", bind_host,
                "--port", str(port),
            ],
            netns=netns,
            home=self.workdir / "homes" / "superlink",
        )
        host = address_host or bind_host
        link = SuperLinkInfo(proc, f"{host}:{port}", netns)
        deadline = time.monotonic() + timeout
        while True:
            err = https_health(host, port, c.ca, netns=probe_netns or netns)
            if err is None:
                break
            if not proc.alive():
                raise DeploymentError(f"superlink exited with {proc.popen.returncode}")
            if time.monotonic() > deadline:
                raise DeploymentError(f"superlink /health not OK within {timeout:.0f} s: {err}")
            time.sleep(0.3)
        self.write_cli_config(link.address)
        return link

    # -- flwr CLI ----------------------------------------------------------------------

    def write_cli_config(self, address: str, ca: Path | None = None) -> Path:
        """Write ``$FLWR_HOME/config.toml`` for the CLI: one TLS connection, the default."""
        self.cli_home.mkdir(parents=True, exist_ok=True)
        path = self.cli_home / "config.toml"
        path.write_text(
            "[superlink]\n"
            f'default = "{self.connection}"\n\n'
            f"[superlink.{self.connection}]\n"
            f'address = "{address}"\n'
            f'root-certificates = "{ca or self.creds.ca}"\n'
        )
        return path

    def flwr(
        self, *args: str, netns: str | None = None, timeout: float = 60, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run ``flwr ARGS`` with the harness's FLWR_HOME; log the call and its output."""
        self._cli_calls += 1
        netns = netns or self.cli_netns
        cmd = [*(["ip", "netns", "exec", netns] if netns else []), self._exe("flwr"), *args]
        log = self.logs / f"flwr-{self._cli_calls:02d}-{args[0]}.log"
        env = self.env(self.cli_home)
        env["COLUMNS"] = "200"
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=timeout, env=env,
                cwd=self.workdir, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        except subprocess.TimeoutExpired as exc:
            log.write_text(f"$ {' '.join(cmd)}\nTIMEOUT after {timeout} s\n{exc.stdout}")
            raise DeploymentError(f"`flwr {' '.join(args)}` timed out after {timeout} s") from exc
        log.write_text(f"$ {' '.join(cmd)}\nrc={proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        if check and proc.returncode != 0:
            raise DeploymentError(
                f"`flwr {' '.join(args)}` failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    @staticmethod
    def _json(text: str) -> dict:
        start = text.find("{")
        if start < 0:
            raise DeploymentError(f"no JSON in flwr output:\n{text}")
        return json.loads(text[start:])

    def register(self, private_key: Path, netns: str | None = None) -> int:
        """Register ``private_key.pub`` with the SuperLink; return the node id."""
        out = self.flwr(
            "supernode", "register", f"{private_key}.pub", self.connection, "--format", "json",
            netns=netns,
        )
        return int(self._json(out.stdout)["node-id"])

    def list_nodes(self, netns: str | None = None) -> dict[int, str]:
        """``node id -> status`` as the SuperLink reports it."""
        out = self.flwr("supernode", "list", self.connection, "--format", "json", netns=netns)
        return {int(n["node-id"]): n["status"] for n in self._json(out.stdout)["nodes"]}

    def run_app(
        self,
        app_dir: Path,
        run_config: Mapping[str, object] | None = None,
        *,
        netns: str | None = None,
        timeout: float = 120,
    ) -> dict:
        """``flwr run APP`` with log streaming until the run ends; return its ``flwr ls``.

        Raises :class:`DeploymentError` unless the status is ``finished:completed``.
        """
        out = self.flwr(*self._run_args(app_dir, run_config), netns=netns, timeout=timeout)
        return self._finished(self._run_id(out.stdout + out.stderr), netns)

    def _run_args(self, app_dir: Path, run_config: Mapping[str, object] | None) -> list[str]:
        args = ["run", str(app_dir), self.connection, "--stream"]
        for key, value in (run_config or {}).items():
            args += ["--run-config", f"{key}={json.dumps(value)}"]
        return args

    @staticmethod
    def _run_id(text: str) -> int:
        m = re.search(r"Successfully started run (\d+)", text)
        if not m:
            raise DeploymentError(f"flwr run printed no run id:\n{text}")
        return int(m.group(1))

    def start_app(
        self, app_dir: Path, run_config: Mapping[str, object] | None = None, *,
        name: str = "flwr-run", netns: str | None = None,
    ) -> Proc:
        """Start ``flwr run APP --stream`` in the background; its log is the streamed
        ServerApp log (wait on it with :meth:`Proc.wait_for`, end with :meth:`wait_app`).
        """
        cmd = [*(["ip", "netns", "exec", netns] if netns else []), self._exe("flwr"),
               *self._run_args(app_dir, run_config)]
        proc = self.start(name, cmd, home=self.cli_home)
        return proc

    def wait_app(self, proc: Proc, timeout: float, netns: str | None = None) -> dict:
        """Wait for a :meth:`start_app` run to end; return its ``flwr ls`` entry.

        Raises :class:`DeploymentError` unless the status is ``finished:completed``.
        """
        proc.wait_exit(timeout)
        return self._finished(self._run_id(proc.text()), netns)

    def _finished(self, run_id: int, netns: str | None) -> dict:
        deadline = time.monotonic() + 30
        while True:  # --stream returns when the logs are complete; the status follows
            ls = self.flwr(
                "list", self.connection, "--run-id", str(run_id), "--format", "json",
                netns=netns,
            )
            run = self._json(ls.stdout)["runs"][0]
            if str(run["status"]).startswith("finished") or time.monotonic() > deadline:
                break
            time.sleep(1)
        if run["status"] != "finished:completed":
            raise DeploymentError(f"run {run_id}: {run['status']} {run.get('status-details')}")
        return run

    # -- SuperNodes --------------------------------------------------------------------

    def start_supernode(
        self,
        name: str,
        link: SuperLinkInfo | str,
        private_key: Path | None,
        node_config: Mapping[str, object] | None = None,
        *,
        root_ca: Path | None = None,
        runtime_port: int | None = None,
        netns: str | None = None,
        max_wait_s: float = 30,
    ) -> Proc:
        """Start a SuperNode that trusts ``root_ca`` (default: the deployment's CA)."""
        address = link.address if isinstance(link, SuperLinkInfo) else link
        argv = [
            self._exe("flower-supernode"),
            "--root-certificates", str(root_ca or self.creds.ca),
            "--superlink", address,
            "--port", str(runtime_port or free_port()),
            "--max-retries", "3",
            "--max-wait-time", str(max_wait_s),
        ]
        if private_key is not None:
            argv += ["--auth-supernode-private-key", str(private_key)]
        if node_config:
            argv += ["--node-config", node_config_arg(node_config)]
        return self.start(name, argv, netns=netns, home=self.workdir / "homes" / name)

    def kill(self, proc: Proc) -> None:
        """SIGKILL ``proc`` and every process it started (a machine that dies: its
        SuperExec and ClientApp processes go too), by PID; wait for ``proc`` to end.
        """
        desc = _descendants(proc.popen.pid)
        try:
            os.kill(proc.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid, start in desc:
            _kill_if_same(pid, start, signal.SIGKILL)
        proc.popen.wait(timeout=10)

    # -- teardown ----------------------------------------------------------------------

    def stop_all(self, timeout: float = 10) -> None:
        """SIGTERM every started process and its descendants, SIGKILL what is left.

        Descendants are recorded first: Flower starts ``flower-superexec`` in a new
        session, so it is neither in the parent's process group nor, once the parent
        is gone, its child.
        """
        tree = []
        for p in self.procs:
            tree.append((p, _descendants(p.popen.pid)))
        for p, _ in tree:
            if p.alive():
                try:
                    os.kill(p.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for p, _ in tree:
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p, desc in tree:
            if p.alive():
                try:
                    os.killpg(p.popen.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                p.popen.wait(timeout=5)
            for pid, start in desc:
                _kill_if_same(pid, start, signal.SIGKILL)

    def dump_logs(self, lines: int = 40) -> str:
        """The last lines of every process log, for failure reports."""
        parts = [f"Flower deployment logs kept in {self.logs}"]
        for log in sorted(self.logs.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"----- {log.name} -----\n" + "\n".join(tail))
        return "\n".join(parts)

    @contextmanager
    def reporting(self) -> Iterator[Deployment]:
        """Print where the logs are, and their tails, if the body raises.

        Wrap a test body in it when the deployment comes from a fixture: pytest does
        not pass a test's exception on to its fixtures.
        """
        try:
            yield self
        except BaseException:
            print(self.dump_logs(), file=sys.stderr)
            raise

    def __enter__(self) -> Deployment:
        # A SIGTERM (e.g. a CI timeout) would end pytest without unwinding this context,
        # leaving the new-session Flower processes behind: turn it into an exception.
        self._old_term = None
        if threading.current_thread() is threading.main_thread() and signal.getsignal(
            signal.SIGTERM
        ) in (signal.SIG_DFL, None):
            self._old_term = signal.signal(signal.SIGTERM, _raise_interrupt)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.stop_all()
        finally:
            if self._old_term is not None:
                signal.signal(signal.SIGTERM, self._old_term)
            if exc_type is not None:
                print(self.dump_logs(), file=sys.stderr)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def node_config_arg(config: Mapping[str, object]) -> str:
    """``--node-config`` string: space separated ``key=value``, strings quoted."""
    parts = []
    for key, value in config.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            value = json.dumps(str(value) if not isinstance(value, bool) else value)
        parts.append(f"{key}={value}")
    return " ".join(parts)


_HEALTH_PROBE = r"""
import socket, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
try:
    with socket.create_connection((host, port), timeout=3) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            s.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64).decode("latin-1")
except (OSError, ssl.SSLError) as exc:
    print(f"{type(exc).__name__}: {exc}")
    sys.exit(1)
if not head.startswith("HTTP/1.1 200"):
    print(head.splitlines()[0] if head else "empty answer")
    sys.exit(1)
"""


def https_health(host: str, port: int, ca: Path, netns: str | None = None) -> str | None:
    """GET /health over TLS verified against ``ca`` for ``host``; ``None`` when 200."""
    cmd = [sys.executable, "-c", _HEALTH_PROBE, host, str(port), str(ca)]
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
    return None if proc.returncode == 0 else (proc.stdout + proc.stderr).strip()


# --------------------------------------------------------------------------------------
# Network namespaces
# --------------------------------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=check)


def netns_unavailable() -> str | None:
    """Why network namespaces with veth pairs and a bridge cannot be made, or ``None``."""
    if shutil.which("ip") is None:
        return "`ip` not found (Debian package iproute2)"
    probe = f"gflprobe{os.getpid() % 100000}"
    try:
        r = _ip("netns", "add", probe, check=False)
        if r.returncode != 0:
            return f"`ip netns add` refused ({r.stderr.strip()}); needs root / CAP_NET_ADMIN"
        r = _ip("-n", probe, "link", "add", "br0", "type", "bridge", check=False)
        if r.returncode != 0:
            return f"cannot create a bridge in a namespace: {r.stderr.strip()}"
        r = _ip("-n", probe, "link", "add", "va", "type", "veth", "peer", "name", "vb",
                check=False)
        if r.returncode != 0:
            return f"cannot create a veth pair in a namespace: {r.stderr.strip()}"
        return None
    finally:
        _ip("netns", "del", probe, check=False)


@dataclass
class Topology:
    """Namespaces on one private bridge: the SuperLink's and one per peer."""

    link_ns: str
    link_ip: str
    peer_ns: list[str] = field(default_factory=list)
    peer_ips: list[str] = field(default_factory=list)


@contextmanager
def netns_topology(peers: int, subnet: str = "10.231.7") -> Iterator[Topology]:
    """Create ``peers + 1`` namespaces joined by a bridge; delete them afterwards.

    The SuperLink namespace holds bridge ``br0`` with ``SUBNET.1/24``; peer ``i`` gets a
    veth pair (one end on the bridge) and ``SUBNET.(10+i)/24``. Addresses exist only
    inside these namespaces. Deleting a namespace deletes its interfaces, and the veth
    ends are created directly inside the namespaces, so nothing is left behind.
    """
    tag = uuid.uuid4().hex[:6]
    topo = Topology(link_ns=f"gfl{tag}l", link_ip=f"{subnet}.1")
    made: list[str] = []
    try:
        _ip("netns", "add", topo.link_ns)
        made.append(topo.link_ns)
        _ip("-n", topo.link_ns, "link", "set", "lo", "up")
        _ip("-n", topo.link_ns, "link", "add", "br0", "type", "bridge")
        _ip("-n", topo.link_ns, "addr", "add", f"{topo.link_ip}/24", "dev", "br0")
        _ip("-n", topo.link_ns, "link", "set", "br0", "up")
        for i in range(peers):
            ns, ip = f"gfl{tag}p{i}", f"{subnet}.{10 + i}"
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("link", "add", f"gfl{tag}b{i}", "netns", topo.link_ns, "type", "veth",
                "peer", "name", "eth0", "netns", ns)
            _ip("-n", topo.link_ns, "link", "set", f"gfl{tag}b{i}", "master", "br0")
            _ip("-n", topo.link_ns, "link", "set", f"gfl{tag}b{i}", "up")
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            topo.peer_ns.append(ns)
            topo.peer_ips.append(ip)
        yield topo
    finally:
        for ns in reversed(made):
            _ip("netns", "del", ns, check=False)
