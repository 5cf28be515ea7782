"""systemd's readiness and watchdog protocol (``sd_notify``): a datagram to a socket.

Under ``Type=notify`` systemd sets ``$NOTIFY_SOCKET``; ``READY=1`` says start-up is done,
``WATCHDOG=1`` must arrive at least every ``$WATCHDOG_USEC`` microseconds, ``RELOADING=1``
and ``STOPPING=1`` show in ``systemctl status``. Without the variable nothing is sent.
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``"READY=1"``) to systemd; False when not under systemd or
    the socket is gone (never raises: a status line must not stop the daemon)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address[0] == "@":  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half systemd's timeout), or None when not asked."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 2e6
