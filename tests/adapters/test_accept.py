"""The hand-written accept loop under a real descriptor limit (issue 17 item 5).

A child process with ``RLIMIT_NOFILE`` of 64 accepts with no budget of its own, so the kernel's
EMFILE is what stops it: accepting pauses (logged once), connections it holds keep being
served, and waiting ones are taken once descriptors are free again.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import time

CHILD = textwrap.dedent(
    """
    import asyncio, logging, resource, socket, sys
    from shaken.adapters.accept import Acceptor, DescriptorBudget

    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
        def data_received(self, data):
            self.transport.write(data)

    async def main():
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen(512)
        listening.setblocking(False)
        budget = DescriptorBudget(reserve=0, limit=1_000_000)  # only the kernel stops it
        acceptor = Acceptor(listening, Echo, name="test", budget=budget, retry=0.2)
        acceptor.start()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        print(listening.getsockname()[1], flush=True)
        while await reader.readline():
            print(budget.exhausted, acceptor.accepted, flush=True)

    asyncio.run(main())
    """
)


def _echo(sock: socket.socket, data: bytes) -> bytes:
    sock.settimeout(30)
    sock.sendall(data)
    return sock.recv(100)


def test_17_5_accepting_pauses_on_emfile_and_resumes() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    clients: list[socket.socket] = []
    try:
        port = int(child.stdout.readline())

        def status() -> tuple[int, int]:
            assert child.stdin is not None and child.stdout is not None
            child.stdin.write("?\n")
            child.stdin.flush()
            exhausted, accepted = child.stdout.readline().split()
            return int(exhausted), int(accepted)

        for _ in range(100):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=30))
        deadline = time.monotonic() + 30
        while status()[0] == 0:
            assert time.monotonic() < deadline, "never ran out of descriptors"
            time.sleep(0.05)
        time.sleep(0.5)  # several retries, each failing again
        exhausted, accepted = status()
        assert exhausted >= 2 and accepted < 64
        assert _echo(clients[0], b"still served") == b"still served"
        for sock in clients[:60]:
            sock.close()
        # The last one waited in the backlog; it is taken once descriptors are free.
        assert _echo(clients[-1], b"ping") == b"ping"
        assert status()[1] == 100
    finally:
        for sock in clients:
            sock.close()
        child.stdin.close()
        child.wait(30)
    errors = child.stderr.read() if child.stderr else ""
    assert child.returncode == 0, errors
    assert errors.count("out of descriptors") == 1, errors  # once per interval, not per try
    assert "Traceback" not in errors
