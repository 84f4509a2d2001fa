"""The client side's ZeroMQ sockets: a DEALER for commands, a SUB for updates,
each optionally a CURVE client. Client, Subscriber, Watcher and their asyncio
twins open theirs here.
"""

from __future__ import annotations

import zmq
import zmq.auth

def use_curve(sock: zmq.Socket, server_key: str | None, client_key: str | None) -> None:
    """Make `sock` a CURVE client: server_key is the actor's public certificate
    file (actor.key), client_key this client's secret certificate file."""
    if server_key is None and client_key is None:
        return
    if server_key is None or client_key is None:
        raise ValueError("CURVE needs both server_key and client_key")
    sock.curve_serverkey = zmq.auth.load_certificate(server_key)[0]
    public, secret = zmq.auth.load_certificate(client_key)
    if secret is None:
        raise ValueError(f"{client_key} holds no secret key; pass the .key_secret file")
    sock.curve_publickey = public
    sock.curve_secretkey = secret


def dealer(context: zmq.Context, endpoint: str, server_key: str | None,
           client_key: str | None) -> zmq.Socket:
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    use_curve(sock, server_key, client_key)
    sock.connect(endpoint)
    return sock


def subscription(context: zmq.Context, endpoint: str, topics: tuple[str, ...],
                 server_key: str | None, client_key: str | None,
                 rcvhwm: int | None = None) -> zmq.Socket:
    sock = context.socket(zmq.SUB)
    sock.setsockopt(zmq.LINGER, 0)
    if rcvhwm is not None:
        # Only takes effect before connect; tests shrink it to make a listener overflow.
        sock.setsockopt(zmq.RCVHWM, rcvhwm)
    use_curve(sock, server_key, client_key)
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sock.connect(endpoint)
    return sock
