"""An independent MLLP receiver for tests: python-hl7's asyncio MLLP server, in a thread.

It parses what it receives with python-hl7 and answers with python-hl7's ``create_ack`` according to a
script, one behaviour per message received (the last one repeats): an acknowledgment code (``AA``,
``CA``, ``AE``, ``AR``, ``CR``), the same late (``AA+25``: 25 s after the message), ``wrong-id`` (an AA for
another control ID), ``silent`` (never answers) or ``close`` (drops the connection without answering).
With ``tls`` (a server context) it takes MLLP over TLS only, as a secure node's RIS does (asyncio's TLS).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import hl7
import hl7.mllp

from radtrace.testing.atna import Pki
from radtrace.testing.services import free_port


def ris_tls(server: Pki, *clients: Pki) -> ssl.SSLContext:
    """The server context of a RIS over TLS presenting ``server``'s certificate; with ``clients``, mutual TLS: a client
    certificate of one of their CAs is required."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server.server_cert, server.server_key)
    if clients:
        context.verify_mode = ssl.CERT_REQUIRED
        for client in clients:
            context.load_verify_locations(client.ca)
    return context


@dataclass
class MllpReceiver:
    """What the receiver got, and how to reach it."""

    host: str
    port: int
    script: list[str]
    received: list[hl7.Message] = field(default_factory=list)

    @property
    def control_ids(self) -> list[str]:
        """MSH-10 of each message received, in order."""
        return [str(message.segment("MSH")[10]) for message in self.received]

    def _behaviour(self) -> str:
        index = min(len(self.received) - 1, len(self.script) - 1)
        return self.script[index]


async def _serve(
    receiver: MllpReceiver, ready: threading.Event, stop: asyncio.Event, tls: ssl.SSLContext | None
) -> None:
    async def handle(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
        try:
            while not reader.at_eof():
                message = await reader.readmessage()
                receiver.received.append(message)
                behaviour = receiver._behaviour()
                if behaviour == "silent":
                    await stop.wait()
                    return
                if behaviour == "close":
                    return
                code, late, delay = behaviour.partition("+")
                if late:  # e.g. AA+25: that code, 25 s late (a slow RIS)
                    await asyncio.sleep(float(delay))
                    behaviour = code
                if behaviour == "wrong-id":
                    ack = message.create_ack("AA", message_id="ACK1")
                    ack.segment("MSA")[2] = "SOMETHING-ELSE"
                else:
                    ack = message.create_ack(behaviour, message_id="ACK1")
                writer.writemessage(ack)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()
            with suppress(Exception):
                await writer.wait_closed()

    server = await hl7.mllp.start_hl7_server(handle, receiver.host, receiver.port, encoding="utf-8", ssl=tls)
    ready.set()
    async with server:
        await stop.wait()


@contextmanager
def mllp_receiver(
    script: Sequence[str] = ("AA",), port: int | None = None, tls: ssl.SSLContext | None = None
) -> Iterator[MllpReceiver]:
    """Run a receiver on ``port`` (default: a free local port) for the duration of the block; over TLS with ``tls``."""
    receiver = MllpReceiver("127.0.0.1", port or free_port(), list(script))
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(_serve(receiver, ready, stop, tls))
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the MLLP receiver did not start")
    try:
        yield receiver
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
