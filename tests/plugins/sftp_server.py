"""A real SFTP server (asyncssh) on 127.0.0.1 for tests, in a thread with its own event loop."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

import asyncssh

PASSWORD = "correct horse"


class _PasswordServer(asyncssh.SSHServer):
    """Accepts the authorized client key, or the test password."""

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return password == PASSWORD


class SftpServer:
    """Serves the real filesystem over SFTP on a free loopback port until ``stop()``."""

    def __init__(self, directory: Path, sftp_factory: Any = True) -> None:
        self.directory = directory
        self._sftp_factory = sftp_factory
        host_key = asyncssh.generate_private_key("ssh-ed25519")
        client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.key_file = directory / "id_ed25519"
        client_key.write_private_key(str(self.key_file))
        self.known_hosts = directory / "known_hosts"
        self._host_key = host_key
        self._authorized = asyncssh.import_authorized_keys(
            client_key.export_public_key("openssh").decode())
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="sftp-server", daemon=True)

    def start(self) -> SftpServer:
        """Start listening; return when the port is known."""
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the SFTP server did not start within 10s")
        if self._failure is not None:
            raise self._failure
        public = self._host_key.export_public_key("openssh").decode().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {public[0]} {public[1]}\n")
        return self

    def _serve(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            acceptor = loop.run_until_complete(asyncssh.listen(
                "127.0.0.1", 0, server_host_keys=[self._host_key],
                authorized_client_keys=self._authorized, server_factory=_PasswordServer,
                sftp_factory=self._sftp_factory, allow_scp=False))
            self.port = acceptor.get_port()
        except BaseException as error:
            self._failure = error
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            acceptor.close()
            loop.run_until_complete(acceptor.wait_closed())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def url(self, path: Path | str, user: str = "tester") -> str:
        """The sftp:// URL of a path on this server."""
        return f"sftp://{user}@127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        """Stop serving and join the thread; idempotent."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def closed_port() -> int:
    """A loopback port on which nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
