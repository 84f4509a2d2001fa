"""mqtt: the actor against EVerest's own transport, a JSON call through mosquitto.

EVerest modules call each other's commands through the MQTT broker
(lib/everest/framework/lib/everest.cpp): the caller publishes
{"id", "args", "origin"} to everest/<module>/<impl>/cmd/<cmd> and waits for
{"type": "result", "data": {"id", "retval", "origin"}} on
<cmd topic>/response/<origin>, at QoS 2 (QoS 0 is measured too, as the best
case of the same path). Here the callee is a paho-mqtt responder process that
decodes the JSON, validates the arguments and decides with this project's own
ReservationCore (the same parse_command and core.apply the actor runs, minus
ZeroMQ and msgpack), so both sides do the same work and only the transport
differs. The caller is this process, single-threaded (publish, then run the
paho loop until the response arrives), the best case for paho.

Both are driven with the same reserve/cancel loop (reserve id n on EVSE 1,
cancel id n); the figure is the p50 (and p99) of the reserve_now round trips,
actor over tcp against mosquitto, measured alternately in the same run.

Needs the `mosquitto` binary (Debian: apt-get install mosquitto) and paho-mqtt
(pip install 'reservation-actor[bench]'); without them the suite is skipped.
The suite starts its own mosquitto on a free 127.0.0.1 port and stops it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import sys
import time

import zmq

from bench.common import Context, Figure, percentile
from bench.procs import free_port, servers, short_tmp, start_actor, start_process, track, untrack
from bench.suites.rtt import cancel, connect, lockstep, reserve
from protocol.vocabulary import Command, ConnectorType, ReservationResult

MODULE, IMPL, CALLER = "auth", "reservation", "evse_manager_1"
PREFIX = f"everest/{MODULE}/{IMPL}/cmd/"
_RESPONDER_READY = re.compile(r"responder ready on (\S+)")


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None)


def unavailable() -> str | None:
    if mosquitto_binary() is None:
        return "no mosquitto broker (Debian: apt-get install mosquitto)"
    if importlib.util.find_spec("paho") is None or importlib.util.find_spec("paho.mqtt") is None:
        return "no paho-mqtt (pip install 'reservation-actor[bench]')"
    return None


# -- the broker -------------------------------------------------------------------------

class Broker:
    def __init__(self, directory: str) -> None:
        import subprocess
        self.port = free_port()
        config = os.path.join(directory, "mosquitto.conf")
        with open(config, "w") as f:
            f.write(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                    "persistence false\nlog_dest none\nset_tcp_nodelay true\n")
        self.process = subprocess.Popen([mosquitto_binary(), "-c", config],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        track(self.process)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"mosquitto did not start on 127.0.0.1:{self.port}")
                time.sleep(0.02)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except Exception:
                self.process.kill()
                self.process.wait()
        untrack(self.process)


def new_client(client_id: str):
    import paho.mqtt.client as mqtt
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                       protocol=mqtt.MQTTv311)


def connect_client(client, port: int, timeout: float = 10) -> None:
    client.connect("127.0.0.1", port, keepalive=60)
    deadline = time.monotonic() + timeout
    while not client.is_connected():
        client.loop(0.05)
        if time.monotonic() > deadline:
            raise TimeoutError("paho client did not connect to mosquitto")
    # Nagle's algorithm off, as on the broker: without it QoS 2's four-packet
    # handshakes meet delayed ACKs and a call takes ~90 ms. MQTT's best case.
    client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# -- the callee: python -m bench.suites.mqtt responder PORT ------------------------------------

def responder(port: int) -> None:
    """Answer reserve_now / cancel_reservation calls the way an EVerest module does."""
    from actor.config import DEFAULT_STATION
    from actor.core import ReservationCore
    from actor.clock import UtcClock
    from protocol.messages import parse_command
    from protocol.wire import ProtocolError

    clock = UtcClock()
    core = ReservationCore(((e.id, e.connectors) for e in DEFAULT_STATION), tick=0.01, now=clock())
    take_changes = getattr(core, "take_changes", None)   # nothing is stored here
    client = new_client(MODULE)

    def on_message(client, userdata, message) -> None:
        call = json.loads(message.payload)
        cmd = message.topic[len(PREFIX):]
        try:
            outcome = core.apply(parse_command(cmd, call["args"]), clock())
            data = {"id": call["id"], "retval": outcome.result, "origin": MODULE}
        except ProtocolError as error:
            data = {"id": call["id"], "error": {"type": error.code, "msg": error.message},
                    "origin": MODULE}
        if take_changes is not None:
            take_changes()
        client.publish(f"{message.topic}/response/{call['origin']}",
                       json.dumps({"type": "result", "data": data}), qos=message.qos)

    client.on_message = on_message
    connect_client(client, port)
    subscribed = []
    client.on_subscribe = lambda *args: subscribed.append(True)
    client.subscribe(PREFIX + "+", qos=2)
    while not subscribed:
        client.loop(0.05)
    print(f"responder ready on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    client.loop_forever()


# -- the caller -------------------------------------------------------------------------------

class Caller:
    def __init__(self, port: int) -> None:
        self.client = new_client(CALLER)
        self.replies: dict[int, dict] = {}
        self.client.on_message = self._on_message
        connect_client(self.client, port)
        subscribed = []
        self.client.on_subscribe = lambda *args: subscribed.append(True)
        self.client.subscribe(f"{PREFIX}+/response/{CALLER}", qos=2)
        while not subscribed:
            self.client.loop(0.05)
        self.next_id = 1

    def _on_message(self, client, userdata, message) -> None:
        data = json.loads(message.payload)["data"]
        self.replies[data["id"]] = data

    def call(self, cmd: str, args: dict, qos: int, timeout: float = 10.0) -> object:
        call_id = self.next_id
        self.next_id += 1
        self.client.publish(PREFIX + cmd, json.dumps(
            {"id": call_id, "args": args, "origin": CALLER}), qos=qos)
        deadline = time.monotonic() + timeout
        loop, replies = self.client.loop, self.replies
        while call_id not in replies:
            loop(0.5)
            if time.monotonic() > deadline:
                raise TimeoutError(f"no MQTT response to {cmd} within {timeout} s")
        data = replies.pop(call_id)
        if "error" in data:
            raise RuntimeError(f"MQTT responder refused {cmd}: {data['error']}")
        return data["retval"]

    def close(self) -> None:
        self.client.disconnect()


def mqtt_pairs(caller: Caller, first_id: int, n: int, qos: int, expiry: str) -> list[float]:
    """reserve_now round trips (us) of n reserve/cancel pairs."""
    times = []
    clock = time.perf_counter_ns
    for k in range(n):
        request = {"reservation_id": first_id + k, "id_token": "BENCH", "expiry_time": expiry,
                   "evse_id": 1, "connector_type": ConnectorType.cCCS2}
        t0 = clock()
        result = caller.call(Command.RESERVE_NOW, {"request": request}, qos)
        times.append((clock() - t0) / 1000)
        if result != ReservationResult.ACCEPTED or caller.call(
                Command.CANCEL_RESERVATION, {"reservation_id": first_id + k}, qos) is not True:
            raise RuntimeError(f"MQTT responder: unexpected reserve/cancel result {result!r}")
    return times


def actor_pairs(sock: zmq.Socket, first_id: int, n: int) -> list[float]:
    requests = []
    for k in range(n):
        requests.append(reserve(2 * k, first_id + k, 1))
        requests.append(cancel(2 * k + 1, first_id + k))
    times, replies = lockstep(sock, requests)
    if any(ReservationResult.ACCEPTED.encode() not in r for r in replies[0::2]):
        raise RuntimeError("actor: a reserve_now was not Accepted")
    return times[0::2]


def run(ctx: Context) -> list[Figure]:
    from bench.suites.rtt import EXPIRY
    reps = ctx.reps()
    n = 200 if ctx.quick else 1000
    samples = {key: {50: [], 99: []} for key in ("actor", 2, 0)}
    context = zmq.Context()
    with short_tmp() as tmp, servers() as started:
        broker = Broker(tmp)
        caller = sock = None
        try:
            started.append(start_process(
                "responder", ["-m", "bench.suites.mqtt", "responder", str(broker.port)],
                _RESPONDER_READY))
            actor = start_actor("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", store=":memory:")
            started.append(actor)
            caller = Caller(broker.port)
            sock = connect(context, actor.endpoint)
            next_id = 1
            # Warm-up: connections, caches, the broker's session state.
            actor_pairs(sock, 1_000_000_000, 100)
            for qos in (2, 0):
                mqtt_pairs(caller, 1_000_000_000, 50, qos, EXPIRY)
            for rep in range(reps):
                ctx.progress(f"mqtt: repetition {rep + 1}/{reps} ({n} reserve/cancel pairs each)")
                order = ["actor", 2, 0] if rep % 2 == 0 else [0, 2, "actor"]
                for key in order:
                    if key == "actor":
                        times = actor_pairs(sock, next_id, n)
                    else:
                        times = mqtt_pairs(caller, next_id, n, key, EXPIRY)
                    next_id += n
                    for p in (50, 99):
                        samples[key][p].append(percentile(times, p))
        finally:
            if caller is not None:
                caller.close()
            if sock is not None:
                sock.close()
            context.term()
            broker.stop()
    figures = []
    for qos in (2, 0):
        for p in (50, 99):
            figures.append(Figure(
                suite="mqtt", name=f"reserve_now p{p}: actor (tcp) vs MQTT QoS {qos}", unit="us",
                samples=samples["actor"][p], baseline=f"mosquitto QoS {qos}, JSON",
                baseline_samples=samples[qos][p], higher_is_better=False,
                target=0.2 if (qos == 2 and p == 50) else None,
                note=("EVerest's cmd/response topics and payloads through mosquitto; the paho "
                      "responder validates and decides with our ReservationCore (no store, log or "
                      "updates: less work than the actor); TCP_NODELAY on "
                      "broker and clients (MQTT's best case); "
                      f"{n} round trips per repetition" if qos == 2 and p == 50 else ""),
                params={"qos": qos, "percentile": p}))
    return figures


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "responder":
        responder(int(sys.argv[2]))
    else:
        sys.exit("usage: python -m bench.suites.mqtt responder PORT")
