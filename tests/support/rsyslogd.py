"""A real `rsyslogd` for tests and benchmarks: own config, PID file, work directory and ports.

Inputs: UDP, TCP, TLS (gtls, client not authenticated) and mTLS (gtls, client certificate
required, `x509/certvalid`), and with `relp=True` RELP (imrelp, package rsyslog-relp) plain and,
with TLS files, over TLS (`relps`, client certificate required: imrelp with certificates
authenticates both ends). Each input writes what it received to its own file. The
RELP rulesets run without a queue (`queue.type="Direct"`): imrelp answers `rsp 200` once the
message is handed on, so only then does the acknowledgement mean "written to the file", which
is what tests that SIGKILL the receiver judge. With the
"json" template every line is one JSON object holding the raw message, JSON-escaped by rsyslog
itself (so multi-line or odd messages read back exactly), plus what rsyslog's own parser made
of the header; the "plain" template writes `%rawmsg%` per line (benchmarks).

Control characters are kept as received (`parser.escapeControlCharactersOnReceive="off"`);
rsyslog still turns NUL into `#000`, so formats must not rely on sending NUL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

RSYSLOGD_CANDIDATES = ("rsyslogd", "/usr/sbin/rsyslogd")
INPUTS = ("udp", "tcp", "tls", "mtls", "relp", "relps")

_JSON_TEMPLATE = """template(name="capture" type="list") {
  constant(value="{\\"raw\\":\\"") property(name="rawmsg" format="json")
  constant(value="\\",\\"pri\\":\\"") property(name="pri" format="json")
  constant(value="\\",\\"hostname\\":\\"") property(name="hostname" format="json")
  constant(value="\\",\\"app\\":\\"") property(name="app-name" format="json")
  constant(value="\\",\\"procid\\":\\"") property(name="procid" format="json")
  constant(value="\\",\\"msgid\\":\\"") property(name="msgid" format="json")
  constant(value="\\",\\"sd\\":\\"") property(name="structured-data" format="json")
  constant(value="\\"}\\n")
}"""
_PLAIN_TEMPLATE = """template(name="capture" type="list") {
  property(name="rawmsg") constant(value="\\n")
}"""


def find_rsyslogd() -> str | None:
    for candidate in RSYSLOGD_CANDIDATES:
        if os.sep in candidate:
            if os.access(candidate, os.X_OK):
                return candidate
        else:
            for folder in os.environ.get("PATH", "").split(os.pathsep):
                path = os.path.join(folder, candidate)
                if os.access(path, os.X_OK):
                    return path
    return None


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for the receiver: the CA that signs client certs, and its own cert and key."""

    ca: Path
    cert: Path
    key: Path


class Rsyslogd:
    """One rsyslogd process in the foreground (`-n`); `start`/`stop`/`restart` keep the ports."""

    def __init__(
        self,
        binary: str,
        workdir: Path,
        *,
        tls: TlsFiles | None = None,
        template: Literal["json", "plain"] = "json",
        max_message_size: str = "256k",
        relp: bool = False,
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.tls = tls
        self.template = template
        self.max_message_size = max_message_size
        workdir.mkdir(parents=True, exist_ok=True)
        self.ports = {"udp": free_port(socket.SOCK_DGRAM), "tcp": free_port()}
        if tls is not None:
            self.ports.update(tls=free_port(), mtls=free_port())
        if relp:
            self.ports["relp"] = free_port()
            if tls is not None:
                self.ports["relps"] = free_port()
        self.conf = workdir / "rsyslog.conf"
        self.pidfile = workdir / "rsyslogd.pid"
        self.logfile = workdir / "rsyslogd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.conf.write_text(self._config(), encoding="utf-8")

    def output(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def _config(self) -> str:
        tls_globals = ""
        if self.tls is not None:
            tls_globals = (f'DefaultNetstreamDriverCAFile="{self.tls.ca}" '
                           f'DefaultNetstreamDriverCertFile="{self.tls.cert}" '
                           f'DefaultNetstreamDriverKeyFile="{self.tls.key}"')
        lines = [
            f'global(workDirectory="{self.workdir}" maxMessageSize="{self.max_message_size}" '
            f'parser.escapeControlCharactersOnReceive="off" net.enableDNS="off" {tls_globals})',
            # Drain what was received before exiting on SIGTERM.
            'main_queue(queue.timeoutShutdown="20000" queue.size="200000")',
            'module(load="imudp")',
            'module(load="imtcp" maxSessions="1000")',
            _JSON_TEMPLATE if self.template == "json" else _PLAIN_TEMPLATE,
        ]
        if "relp" in self.ports:
            lines.append('module(load="imrelp")')
        for name in self.ports:
            queue = ' queue.type="Direct"' if name.startswith("relp") else ""
            lines.append(f'ruleset(name="{name}"{queue}) {{ action(type="omfile" '
                         f'file="{self.output(name)}" template="capture") }}')
        lines.append(f'input(type="imudp" address="127.0.0.1" port="{self.ports["udp"]}" '
                     'ruleset="udp" rcvbufSize="4m")')
        lines.append(f'input(type="imtcp" address="127.0.0.1" port="{self.ports["tcp"]}" '
                     'ruleset="tcp" maxFrameSize="250000")')
        if self.tls is not None:
            for name, auth in (("tls", "anon"), ("mtls", "x509/certvalid")):
                lines.append(
                    f'input(type="imtcp" address="127.0.0.1" port="{self.ports[name]}" '
                    f'ruleset="{name}" maxFrameSize="250000" streamDriver.name="gtls" '
                    f'streamDriver.mode="1" streamDriver.authMode="{auth}")')
        if "relp" in self.ports:
            lines.append(f'input(type="imrelp" address="127.0.0.1" port="{self.ports["relp"]}" '
                         f'ruleset="relp" maxDataSize="{self.max_message_size}")')
        if "relps" in self.ports:
            assert self.tls is not None
            lines.append(
                f'input(type="imrelp" address="127.0.0.1" port="{self.ports["relps"]}" '
                f'ruleset="relps" maxDataSize="{self.max_message_size}" tls="on" '
                f'tls.caCert="{self.tls.ca}" tls.myCert="{self.tls.cert}" '
                f'tls.myPrivKey="{self.tls.key}" tls.authMode="certvalid")')
        return "\n".join(lines) + "\n"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 20.0) -> None:
        """Start and wait (polling, with a deadline) until every input accepts messages."""
        if self.running:
            return
        with self.logfile.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        for name, port in self.ports.items():
            if name != "udp":
                self._wait_tcp(port, deadline)
        self._wait_udp(deadline)

    def _check_alive(self) -> None:
        if not self.running:
            log = self.logfile.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"rsyslogd exited during startup:\n{log}")

    def _wait_tcp(self, port: int, deadline: float) -> None:
        while True:
            self._check_alive()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"rsyslogd did not listen on tcp/{port}") from None
                time.sleep(0.01)

    def _wait_udp(self, deadline: float) -> None:
        """imudp has no handshake: probe until a probe message shows up in its output."""
        marker = f"rsyslogd-probe-{uuid.uuid4().hex}".encode()
        path = self.output("udp")
        next_probe = 0.0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while True:
                self._check_alive()
                if time.monotonic() >= next_probe:
                    sock.sendto(b"<14>1 - probe - - - - " + marker, ("127.0.0.1", self.ports["udp"]))
                    next_probe = time.monotonic() + 0.2
                if path.exists() and marker in path.read_bytes():
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError("rsyslogd's UDP input did not come up")
                time.sleep(0.01)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait for the exit (rsyslogd drains its queue first)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.send_signal(signal.SIGCONT)  # a paused one acts on it only once resumed
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL: what it had read but not written, and its sockets' unread bytes, are lost."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def pause(self, timeout: float = 10.0) -> None:
        """SIGSTOP: it hangs, reading nothing; its kernel still accepts what fits its buffers.

        Returns once every thread has stopped. Each thread stops only when it next leaves the
        kernel, and on a loaded machine one can go on for a while. An input thread still
        running reads what the test writes next into rsyslogd's own memory; the kill then
        finds the socket empty, the kernel closes it with a FIN rather than a RST, and the
        sender rightly takes everything as read: the burst the test meant to leave unread in
        the socket buffer is lost in rsyslogd instead. Seen under a full suite beside a busy
        loop on 2 cores: a hung-receiver test lost its whole burst."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while not self._stopped():
            if self.proc.poll() is not None:
                raise RuntimeError(f"rsyslogd exited instead of stopping ({self.proc.returncode})")
            if time.monotonic() > deadline:
                raise TimeoutError(f"rsyslogd did not stop within {timeout:g}s of SIGSTOP")
            time.sleep(0.001)

    def _stopped(self) -> bool:
        """Whether every thread of the process is in the stopped state (`T`)."""
        assert self.proc is not None
        tasks = Path(f"/proc/{self.proc.pid}/task")
        states = []
        for task in tasks.iterdir():
            try:
                stat = (task / "stat").read_text()
            except FileNotFoundError:  # a thread that just exited
                continue
            states.append(stat[stat.rindex(")") + 2])
        return bool(states) and all(state in "Tt" for state in states)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def records(self, name: str) -> list[dict[str, Any]]:
        """Every complete line of an input's output (json template), in arrival order."""
        path = self.output(name)
        if not path.exists():
            return []
        data = path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        return [json.loads(line) for line in complete.decode("utf-8").splitlines()]

    def lines(self, name: str) -> list[bytes]:
        """Every complete line of an input's output (plain template)."""
        path = self.output(name)
        if not path.exists():
            return []
        data = path.read_bytes()
        return data[: data.rfind(b"\n") + 1].splitlines()
