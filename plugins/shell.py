"""The ``shell`` plugin: run programs, with an optional allow-list, timeout and output cap.

Every command runs in a session of its own, so a timeout can kill the whole
process group (the command *and* anything it started), and nothing the command
left in its group outlives the call.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import selectors
import shlex
import shutil
import signal
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from platybus.errors import ActionError, ArgumentError
from platybus.extensions import Plugin, action

if TYPE_CHECKING:
    from platybus.extensions import NodeContext

_READ_CHUNK = 65536
_SHOWN_COMMAND = 200
_LOADER_PREFIXES = ("LD_", "DYLD_")


class ShellError(ActionError):
    """A ``shell.exec`` call could not run its command to completion."""


class CommandNotAllowed(ShellError):
    """The command is not permitted by the configured allow-list."""


class ProgramNotFound(ShellError):
    """The program to run does not exist or is not executable."""


class CommandTimeout(ShellError):
    """The command ran longer than its timeout and was killed."""


class ShellPlugin(Plugin):
    """Runs programs as subprocesses and returns their exit code and output."""

    class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
        """Options of the ``shell`` plugin."""

        timeout: Annotated[float, msgspec.Meta(gt=0)] = 60.0
        allow: list[str] | None = None
        cwd: str | None = None
        env: dict[str, str] = msgspec.field(default_factory=dict)
        max_output: Annotated[int, msgspec.Meta(ge=0)] = 1_048_576

    config: ShellPlugin.Config

    def __init__(self, name: str, config: Any, context: NodeContext) -> None:
        super().__init__(name, config, context)
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[bytes]] = set()
        self._interrupted: set[subprocess.Popen[bytes]] = set()
        self._stopped = False

    def start(self) -> None:
        """Check the configured working directory."""
        if self.config.cwd is not None and not os.path.isdir(self.config.cwd):
            self.log.warning("shell: configured cwd %s does not exist", self.config.cwd)

    def stop(self) -> None:
        """Kill the commands still running and refuse new ones; idempotent."""
        with self._lock:
            self._stopped = True
            # Commands run in sessions of their own, so a signal to the node (Ctrl-C)
            # does not reach them: without this they would outlive the node.
            for proc in self._running:
                self._interrupted.add(proc)
                _kill_group(proc.pid)

    # -- actions -------------------------------------------------------------

    @action
    def exec(
        self,
        cmd: list[str] | str,
        *,
        shell: bool = False,
        timeout: float | None = None,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> dict[str, Any]:
        """Run a command; return its exit code, stdout, stderr and duration."""
        name = f"{self.name}.exec"
        limit = self.config.timeout if timeout is None else timeout
        if not (limit > 0 and math.isfinite(limit)):
            raise ArgumentError(f"{name}: timeout must be a positive number of seconds, "
                                f"got {limit}", action=name)
        args, shown = self._command(name, cmd, shell)
        if shell and self.config.allow is not None:
            raise CommandNotAllowed(
                f"{name}: shell: true is refused because an allow-list is configured and "
                "the programs a shell command runs cannot be verified; pass cmd as a list",
                action=name,
            )
        workdir = self._workdir(name, cwd)
        if env and self.config.allow is not None:
            _check_env(name, env)
        child_env = {**os.environ, **self.config.env, **(env or {})}
        executable = None if shell else self._check_allowed(name, args[0], workdir, child_env)

        started = time.monotonic()
        with self._lock:
            if self._stopped:
                raise ShellError(f"{name}: the plugin is stopped", action=name)
            proc = self._spawn(name, args, executable, shell, workdir, child_env, input)
            self._running.add(proc)
        with proc:
            try:
                data = None if input is None else input.encode("utf-8")
                finished, out, err, truncated = _communicate(
                    proc, data, started + limit, self.config.max_output
                )
            finally:
                _kill_group(proc.pid)
                # Forget the process before reaping it: stop() must never signal a
                # group whose id the system may already have handed to someone else.
                with self._lock:
                    self._running.discard(proc)
                    interrupted = proc in self._interrupted
                    self._interrupted.discard(proc)
            exit_code = proc.wait()
        if interrupted:
            raise ShellError(f"{name}: command {shown} was killed because the plugin stopped",
                             action=name)
        duration = time.monotonic() - started
        if not finished:
            raise CommandTimeout(
                f"{name}: command {shown} timed out after {limit:g}s and was killed",
                action=name, timeout=limit,
            )
        return {
            "exit_code": exit_code,
            "stdout": out.decode("utf-8", errors="replace"),
            "stderr": err.decode("utf-8", errors="replace"),
            "duration": duration,
            "truncated": truncated,
        }

    # -- checks ------------------------------------------------------------

    def _command(self, name: str, cmd: list[str] | str, shell: bool) -> tuple[Any, str]:
        """Return the Popen args and a short display form of the command."""
        if isinstance(cmd, str):
            if not shell:
                raise ArgumentError(
                    f"{name}: cmd is a string, which runs only with shell: true; pass a list "
                    f"of arguments instead, e.g. cmd: {json.dumps(_split(cmd))}",
                    action=name,
                )
            if not cmd.strip():
                raise ArgumentError(f"{name}: cmd is empty", action=name)
            return cmd, _shorten(cmd)
        if not cmd or not cmd[0]:
            raise ArgumentError(f"{name}: cmd must name a program to run", action=name)
        if shell:
            # A shell given a list would run only its first item as the script; quoting
            # the list into one command line runs what the caller evidently meant.
            line = shlex.join(cmd)
            return line, _shorten(line)
        return list(cmd), _shorten(shlex.join(cmd))

    def _workdir(self, name: str, cwd: str | None) -> str | None:
        """Return the working directory of the command, checking that it exists."""
        base = self.config.cwd
        chosen = base if cwd is None else os.path.join(base, cwd) if base else cwd
        if chosen is not None and not os.path.isdir(chosen):
            raise ShellError(f"{name}: working directory does not exist: {chosen}",
                             action=name, cwd=chosen)
        return chosen

    def _check_allowed(
        self, name: str, program: str, cwd: str | None, env: dict[str, str]
    ) -> str | None:
        """Enforce the allow-list; return the executable that was checked, if any."""
        allow = self.config.allow
        if allow is None:
            return None
        resolved = _find_program(program, env.get("PATH", os.defpath), cwd)
        if resolved is None:
            raise ProgramNotFound(f"{name}: program {program!r} not found",
                                  action=name, program=program)
        # Names in the allow-list are looked up on the node's own PATH, never on a PATH
        # the caller passed, so a caller cannot substitute another program of that name.
        trusted_path = self.config.env.get("PATH", os.environ.get("PATH", os.defpath))
        wanted = _canonical(resolved)
        for entry in allow:
            candidate = (_find_program(entry, trusted_path, self.config.cwd)
                         if "/" in entry else shutil.which(entry, path=trusted_path))
            if candidate is not None and _canonical(candidate) == wanted:
                # Running exactly the file that was checked closes the gap between the
                # check and exec (the child would otherwise search PATH again).
                return resolved
        raise CommandNotAllowed(
            f"{name}: program {program!r} is not in the allow-list "
            f"(allowed: {', '.join(allow) or 'nothing'})",
            action=name, program=program,
        )

    def _spawn(
        self,
        name: str,
        args: Any,
        executable: str | None,
        shell: bool,
        cwd: str | None,
        env: dict[str, str],
        input: str | None,
    ) -> subprocess.Popen[bytes]:
        """Start the command in a new session, mapping spawn failures to clear errors."""
        try:
            return subprocess.Popen(  # noqa: S603 - the allow-list and shell=False checks above
                args,
                executable=executable,
                shell=shell,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                # A session of its own makes the command the leader of a process group
                # that can be killed as a whole, grandchildren included.
                start_new_session=True,
            )
        except (FileNotFoundError, PermissionError) as error:
            program = args if shell else args[0]
            if error.filename not in (None, program, executable):
                raise ShellError(f"{name}: {error.strerror}: {error.filename}",
                                 action=name) from None
            reason = "not found" if isinstance(error, FileNotFoundError) else "not executable"
            raise ProgramNotFound(
                f"{name}: program {program!r} {reason}", action=name, program=program
            ) from None


def _check_env(name: str, env: dict[str, str]) -> None:
    """Refuse variables that make the dynamic loader run code of the caller's choosing."""
    risky = sorted(key for key in env if key.startswith(_LOADER_PREFIXES))
    if risky:
        raise CommandNotAllowed(
            f"{name}: env {', '.join(risky)} is refused because an allow-list is configured "
            "and it would let another program's code run",
            action=name,
        )


def _split(cmd: str) -> list[str]:
    try:
        return shlex.split(cmd)
    except ValueError:
        return [cmd]


def _shorten(text: str) -> str:
    return repr(text if len(text) <= _SHOWN_COMMAND else text[: _SHOWN_COMMAND - 3] + "...")


def _find_program(program: str, path: str, cwd: str | None) -> str | None:
    """Return the file that exec would run for ``program``, or ``None``."""
    if "/" not in program:
        return shutil.which(program, path=path)
    full = os.path.join(cwd, program) if cwd else program
    if os.path.isfile(full) and os.access(full, os.X_OK):
        return os.path.abspath(full)
    return None


def _canonical(path: str) -> str:
    """Resolve the directory of ``path`` but not its last component.

    ``/bin/ls`` and ``/usr/bin/ls`` then compare equal on merged-/usr systems, while
    multi-call binaries (busybox: ``ls`` and ``rm`` both link to it) stay distinct.
    """
    folder, base = os.path.split(os.path.abspath(path))
    return os.path.join(os.path.realpath(folder), base)


def _communicate(
    proc: subprocess.Popen[bytes], data: bytes | None, deadline: float, cap: int
) -> tuple[bool, bytes, bytes, bool]:
    """Feed stdin and collect output until the command exits or ``deadline`` passes.

    Returns whether it finished, its stdout and stderr (each capped at ``cap``
    bytes) and whether anything was cut. The leader is *not* reaped, so its pid
    keeps naming its process group until the caller has killed the group.
    """
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    if stdout is None or stderr is None:
        raise TypeError("_communicate needs a process whose stdout and stderr are pipes")
    out, err = bytearray(), bytearray()
    buffers = {stdout.fileno(): out, stderr.fileno(): err}
    truncated = False
    pending = memoryview(data or b"")
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            selector.register(fd, selectors.EVENT_READ)
        if stdin is not None:
            if pending:
                # Non-blocking, so a child that reads slowly never stalls output collection.
                os.set_blocking(stdin.fileno(), False)
                selector.register(stdin.fileno(), selectors.EVENT_WRITE)
            else:
                stdin.close()
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False, bytes(out), bytes(err), truncated
            for key, _ in selector.select(remaining):
                fd = key.fd
                if fd in buffers:
                    chunk = os.read(fd, _READ_CHUNK)
                    if not chunk:
                        selector.unregister(fd)
                        continue
                    # Past the cap the stream is still drained, or the child would block.
                    room = cap - len(buffers[fd])
                    truncated = truncated or len(chunk) > room
                    buffers[fd] += chunk[: max(room, 0)]
                    continue
                try:
                    pending = pending[os.write(fd, pending):]
                except BlockingIOError:
                    continue
                except BrokenPipeError:
                    # The child stopped reading its input: not an error of the call.
                    pending = memoryview(b"")
                if not pending and stdin is not None:
                    selector.unregister(fd)
                    stdin.close()
    return _wait_unreaped(proc.pid, deadline), bytes(out), bytes(err), truncated


def _wait_unreaped(pid: int, deadline: float) -> bool:
    """Wait until ``pid`` exits without reaping it; return ``False`` at the deadline."""
    pause = 0.001
    while True:
        try:
            state = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        if state is not None:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, 0.05)


def _kill_group(pgid: int) -> None:
    """Kill every process left in a command's process group."""
    # ESRCH: the group is already empty; EPERM (some systems): only the zombie leader
    # remains. Either way nothing is left running.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)

