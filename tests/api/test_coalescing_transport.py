"""The server's transport wrapper: writes of one loop iteration leave together, on a real socket."""

from __future__ import annotations

import asyncio
import socket

from vividflow.apiserver.server import CoalescingTransport


def _pending(peer: socket.socket) -> bytes:
    """What has arrived at ``peer`` so far (without waiting)."""
    try:
        return peer.recv(1 << 20, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


async def _connected() -> tuple[CoalescingTransport, socket.socket]:
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    assert isinstance(transport, asyncio.Transport)
    return CoalescingTransport(transport, loop), peer


async def _next_iteration() -> None:
    await asyncio.sleep(0)


def test_writes_of_one_iteration_are_sent_together_at_its_end() -> None:
    async def run() -> tuple[bytes, bytes, bytes]:
        transport, peer = await _connected()
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"{}")
        held = _pending(peer)
        await _next_iteration()
        await _next_iteration()
        sent = _pending(peer)
        transport.write(b"last")
        transport.close()  # a close sends what is held first
        await _next_iteration()
        closing = peer.recv(100)
        peer.close()
        return held, sent, closing

    held, sent, closing = asyncio.run(run())
    assert held == b""
    assert sent == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"
    assert closing == b"last"


def test_a_large_write_is_not_held_and_an_abort_drops_what_is() -> None:
    async def run() -> tuple[bool, int, bytes]:
        transport, peer = await _connected()
        peer.setblocking(False)
        transport.write(b"x" * CoalescingTransport.FLUSH_BYTES)
        arrived = len(_pending(peer))
        sent_at_once = arrived > 0  # no loop iteration has run
        loop = asyncio.get_running_loop()
        while arrived < CoalescingTransport.FLUSH_BYTES:
            arrived += len(await loop.sock_recv(peer, 1 << 20))
        transport.write(b"never sent")
        transport.abort()
        try:
            rest = await loop.sock_recv(peer, 100)  # closed or reset with nothing more
        except ConnectionResetError:
            rest = b""
        peer.close()
        return sent_at_once, arrived, rest

    sent_at_once, arrived, rest = asyncio.run(run())
    assert sent_at_once and arrived == CoalescingTransport.FLUSH_BYTES and rest == b""
