"""Which connections are idle, so that a graceful shutdown can close them.

A keep-alive connection's thread spends most of its life blocked reading the
next request line. On shutdown those threads must end (the server joins every
handler thread), but threads in the middle of a request must finish it. So a
thread marks its connection idle while it waits for a request line and busy
once one has arrived; ``drain`` shuts the idle ones down (their read returns
at once with nothing) and makes every busy one close after its response.
"""

from __future__ import annotations

import socket
import threading


class Connections:
    """The server's idle keep-alive connections, and whether it is draining for shutdown."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: set[socket.socket] = set()
        self._draining = False

    @property
    def draining(self) -> bool:
        """Whether ``drain`` was called: every connection then closes after its current request."""
        return self._draining

    def wait_for_request(self, conn: socket.socket) -> bool:
        """Mark ``conn`` idle; False if the server is draining and it should close instead."""
        with self._lock:
            if self._draining:
                return False
            self._idle.add(conn)
            return True

    def request_started(self, conn: socket.socket) -> None:
        """Mark ``conn`` busy again: its wait for a request line is over, so a drain no longer shuts it."""
        with self._lock:
            self._idle.discard(conn)

    def drain(self) -> None:
        """From now on connections close after their current request; idle ones close now."""
        with self._lock:
            self._draining = True
            idle, self._idle = self._idle, set()
        for conn in idle:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its client
