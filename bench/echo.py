"""The bare baselines the actor is measured against, each run as its own process.

    python -m bench.echo ENDPOINT
        A single-threaded ROUTER that only decodes each request (msgspec: its id
        and cmd, parsing past the rest) and encodes a reply map {"id", "ok": true,
        "result": <the request's cmd>}: the floor of any msgpack-over-ROUTER
        server in Python, with no validation, no decision and no updates.

    python -m bench.echo --publisher CONTROL UPDATE
        A bare PUB on UPDATE (with the actor's send high-water mark), driven
        over a ROUTER on CONTROL, that publishes
        pre-encoded two-frame messages shaped like the actor's updates (same
        topics, same map keys, a `seq` counter). Control requests (msgpack maps):
          {"cmd": "warm"}                          one message with seq 0 (slow joiners)
          {"cmd": "publish", "first": S, "count": U, "rate": R, "templates": T}
              encode U messages with seq S..S+U-1, then publish them paced at R
              messages per second (0: as fast as possible); the reply's result is
              {"t0", "t1"}: time.monotonic() at the first and after the last send.
              T (optional): [[topic, map], ...], the bodies to cycle through (the
              fanout suite passes updates captured from the actor, so sizes match).

    python -m bench.echo --floor COMMAND UPDATE SCRIPT
        The I/O floor: a single-threaded ROUTER on COMMAND and PUB on UPDATE
        that, for each request, decodes it as the echo does, sends back the reply
        the actor gave to a request of the same `cmd` with this request's id in
        it, then publishes the update messages the actor published for it, each
        with the next `seq`: the actor's own bytes but for the only two fields
        every reply and update must get right, filled in by copying the id's
        bytes and encoding the seq. SCRIPT is a msgpack file {cmd: {"reply":
        bytes, "updates": [[frame, ...], ...]}} recorded from a real actor
        (bench.procs.start_floor); a `cmd` not in it gets the echo's reply. What
        is left between the actor and this is the actor's own work: validation,
        the decision, the store, encoding and logging.

Each prints one line to stderr once bound, like the actor: "echo serving on
ENDPOINT" / "publisher serving on CONTROL, updates on UPDATE" / "floor serving
on COMMAND, updates on UPDATE". SIGTERM (the default disposition) ends them.
The echo and the floor are the fastest pure-Python way to do their I/O, as the
actor does it: frames received one by one with copy=False and Frame.more, sent
one by one with integer flags, so the comparison is of the work and not of the
socket idiom. bench/c/floor.c is the same echo and floor in C on libzmq.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from typing import NamedTuple

import msgpack
import msgspec
import zmq

from actor.server import PUB_HIGH_WATER_MARK
from protocol.vocabulary import ErrorCode, ReservationUpdateStatus, Topic

TOPICS = (Topic.RESERVATION_UPDATE.encode(), Topic.EVSE_RESERVED.encode())
_MORE = int(zmq.SNDMORE)
NIL = msgspec.Raw(b"\xc0")


class Request(msgspec.Struct):
    """What the echo and the floor read of a request, as the actor must: its id
    (kept as its own msgpack bytes, to be copied into the reply) and its cmd;
    the rest (args) is parsed past, which checks the whole request is msgpack."""
    id: msgspec.Raw = NIL
    cmd: str | None = None


class EchoReply(msgspec.Struct):
    id: msgspec.Raw
    ok: bool
    result: object


def request_reader(router: zmq.Socket):
    """read(): (route, request) of the next request on `router`, frame by frame
    with Frame.more (recv_multipart asks RCVMORE through getsockopt for each
    frame, which costs half as much again), the body decoded in place. A body
    that is not a msgpack map reads as Request() (no id, no cmd)."""
    recv = router.recv
    decode = msgspec.msgpack.Decoder(Request).decode

    def read() -> tuple[list[bytes], Request]:
        frame = recv(0, False)
        route = []
        while frame.more:
            route.append(frame.bytes)
            frame = recv(0, False)
        try:
            return route, decode(frame.buffer)
        except msgspec.DecodeError:
            return route, Request()

    return read


def serve_echo(endpoint: str) -> None:
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.bind(endpoint)
    print(f"echo serving on {router.getsockopt_string(zmq.LAST_ENDPOINT)}",
          file=sys.stderr, flush=True)
    read, send = request_reader(router), router.send
    encode = msgspec.msgpack.Encoder().encode
    while True:
        route, request = read()
        for frame in route:
            send(frame, _MORE)
        send(encode(EchoReply(request.id, True, request.cmd)))


def bind_pair(name: str, router_endpoint: str, pub_endpoint: str) -> tuple[zmq.Socket, zmq.Socket]:
    """A ROUTER and a PUB bound as the actor binds its two sockets, announced on
    stderr as "NAME serving on ROUTER, updates on PUB" (what bench.procs waits for)."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    pub = context.socket(zmq.PUB)
    for sock in (router, pub):
        sock.setsockopt(zmq.LINGER, 0)
    # The actor's own queue limit per listener, so losses compare like with like.
    pub.setsockopt(zmq.SNDHWM, PUB_HIGH_WATER_MARK)
    router.bind(router_endpoint)
    pub.bind(pub_endpoint)
    print(f"{name} serving on {router.getsockopt_string(zmq.LAST_ENDPOINT)}, "
          f"updates on {pub.getsockopt_string(zmq.LAST_ENDPOINT)}", file=sys.stderr, flush=True)
    return router, pub


def split_at(body: bytes, key: str) -> tuple[bytes, bytes]:
    """(prefix, suffix) of msgpack map `body` around the value of `key`, so that
    prefix + <any msgpack value> + suffix is the same map with that value."""
    marker = "\x00floor\x00"
    template = msgspec.msgpack.encode({**msgspec.msgpack.decode(body), key: marker})
    encoded = msgspec.msgpack.encode(marker)
    if template.count(encoded) != 1:
        raise ValueError(f"cannot find the {key!r} of {body!r}")
    prefix, suffix = template.split(encoded)
    original = msgspec.msgpack.encode(msgspec.msgpack.decode(body)[key])
    if prefix + original + suffix != body:
        raise ValueError(f"{body!r} does not re-encode byte for byte")
    return prefix, suffix


class Templates(NamedTuple):
    """The floor's script cut where the actor's messages vary: each reply around
    its id, each update body around its seq."""
    replies: dict[str, tuple[bytes, bytes]]                     # cmd -> reply prefix, suffix
    updates: dict[str, list[tuple[bytes, bytes, bytes]]]        # cmd -> [(topic, prefix, suffix)]
    first_seq: int


def cut_script(script: dict) -> Templates:
    seqs = [msgspec.msgpack.decode(body)["seq"]
            for entry in script.values() for _, body in entry["updates"]]
    return Templates(
        {cmd: split_at(entry["reply"], "id") for cmd, entry in script.items()},
        {cmd: [(topic, *split_at(body, "seq")) for topic, body in entry["updates"]]
         for cmd, entry in script.items()},
        max(seqs, default=0) + 1)


def write_c_script(script: dict, path: str) -> None:
    """The floor's templates for bench/c/floor.c, as little-endian length-prefixed
    fields: first seq (u64), the PUB's send high-water mark (u32), entries (u32),
    then per entry its cmd, reply prefix and suffix, update count (u32) and per
    update its topic, prefix and suffix."""
    cut = cut_script(script)
    out = [struct.pack("<QII", cut.first_seq, PUB_HIGH_WATER_MARK, len(cut.replies))]

    def field(data: bytes) -> None:
        out.append(struct.pack("<I", len(data)) + data)

    for cmd, (prefix, suffix) in cut.replies.items():
        for data in (cmd.encode(), prefix, suffix):
            field(data)
        out.append(struct.pack("<I", len(cut.updates[cmd])))
        for update in cut.updates[cmd]:
            for data in update:
                field(data)
    with open(path, "wb") as f:
        f.write(b"".join(out))


def serve_floor(command_endpoint: str, update_endpoint: str, script_path: str) -> None:
    with open(script_path, "rb") as f:
        cut = cut_script(msgpack.unpackb(f.read()))
    router, pub = bind_pair("floor", command_endpoint, update_endpoint)
    read, send, publish = request_reader(router), router.send, pub.send
    encode = msgspec.msgpack.Encoder().encode
    replies, updates = cut.replies, cut.updates
    seq = cut.first_seq
    while True:
        route, request = read()
        for frame in route:
            send(frame, _MORE)
        reply = replies.get(request.cmd)
        if reply is None:
            send(encode(EchoReply(request.id, True, request.cmd)))
            continue
        prefix, suffix = reply
        send(prefix + request.id + suffix)
        for topic, prefix, suffix in updates[request.cmd]:
            publish(topic, _MORE)
            publish(prefix + encode(seq) + suffix)
            seq += 1


def update_messages(first: int, count: int, templates: list | None = None) -> list[list[bytes]]:
    """`count` two-frame messages with seq first.., cycling through `templates`
    ([topic, map] pairs) or else alternating the actor's two update shapes (a
    reservation_update, then the evse_reserved it causes)."""
    out = []
    packb = msgpack.packb
    if templates:
        frames = [(topic.encode() if isinstance(topic, str) else topic, body)
                  for topic, body in templates]
        for n in range(count):
            topic, body = frames[n % len(frames)]
            out.append([topic, packb({**body, "seq": first + n})])
        return out
    for n in range(count):
        seq = first + n
        if n % 2 == 0:
            status = (ReservationUpdateStatus.PLACED if n % 4 == 0
                      else ReservationUpdateStatus.CANCELLED)
            body = {"reservation_id": 100000 + n // 4, "reservation_status": status,
                    "evse_id": 1, "seq": seq}
            out.append([TOPICS[0], packb(body)])
        else:
            reserved = n % 4 == 1
            body = {"evse_id": 1, "reserved": reserved,
                    "reservation_id": 100000 + n // 4 if reserved else None,
                    "held_for_non_evse_specific": False, "seq": seq}
            out.append([TOPICS[1], packb(body)])
    return out


def publish(pub: zmq.Socket, messages: list[list[bytes]], rate: float) -> tuple[float, float]:
    send = pub.send_multipart
    monotonic = time.monotonic
    t0 = monotonic()
    if rate <= 0:
        for frames in messages:
            send(frames)
        return t0, monotonic()
    # Paced in bursts of 4 (one reserve/cancel pair's worth of updates).
    interval = 1.0 / rate
    for n in range(0, len(messages), 4):
        due = t0 + n * interval
        ahead = due - monotonic()
        if ahead > 0.001:
            time.sleep(ahead - 0.0005)
        while monotonic() < due:
            pass
        for frames in messages[n:n + 4]:
            send(frames)
    return t0, monotonic()


def serve_publisher(control_endpoint: str, update_endpoint: str) -> None:
    control, pub = bind_pair("publisher", control_endpoint, update_endpoint)
    warm = update_messages(0, 1)[0]
    while True:
        frames = control.recv_multipart()
        request = msgpack.unpackb(frames[-1])
        cmd = request.get("cmd")
        if cmd == "warm":
            pub.send_multipart(warm)
            result = None
        elif cmd == "publish":
            messages = update_messages(request["first"], request["count"],
                                       request.get("templates"))
            t0, t1 = publish(pub, messages, request.get("rate", 0))
            result = {"t0": t0, "t1": t1}
        else:
            frames[-1] = msgpack.packb({"id": request.get("id"), "ok": False, "error": {
                "code": ErrorCode.UNKNOWN_COMMAND, "message": str(cmd)}})
            control.send_multipart(frames)
            continue
        frames[-1] = msgpack.packb({"id": request.get("id"), "ok": True, "result": result})
        control.send_multipart(frames)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--publisher", action="store_true",
                      help="run the bare publisher: ENDPOINT is its control ROUTER, UPDATE its PUB")
    mode.add_argument("--floor", action="store_true",
                      help="run the I/O floor: ENDPOINT is its ROUTER, UPDATE its PUB, SCRIPT what it sends")
    parser.add_argument("endpoint", metavar="ENDPOINT")
    parser.add_argument("update", metavar="UPDATE", nargs="?")
    parser.add_argument("script", metavar="SCRIPT", nargs="?")
    args = parser.parse_args(argv)
    if args.publisher:
        if not args.update:
            parser.error("--publisher needs CONTROL and UPDATE endpoints")
        serve_publisher(args.endpoint, args.update)
    elif args.floor:
        if not args.script:
            parser.error("--floor needs COMMAND and UPDATE endpoints and a SCRIPT file")
        serve_floor(args.endpoint, args.update, args.script)
    else:
        serve_echo(args.endpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
