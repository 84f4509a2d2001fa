"""Configuration: a TOML file, or the embedded default station.

Every mistake in a config file is reported as one ConfigError naming the key
and what is wrong with it, because the operator's only feedback is that line.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from protocol.vocabulary import ConnectorType
from protocol.wire import DEFAULT_COMMAND_ENDPOINT, DEFAULT_UPDATE_ENDPOINT

from .metrics import MetricsError, http_endpoint

# The store's durability settings (SQLite's PRAGMA synchronous) a config file,
# the command line or a store may choose.
SYNCHRONOUS_MODES = ("full", "normal")


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class EvseConfig:
    id: int
    connectors: tuple[tuple[int, ConnectorType], ...]


# Two EVSEs, each with a CCS2 and a Type 2 connector: the most common AC/DC
# pair in Europe, enough to exercise both specific and non-EVSE-specific rules.
DEFAULT_STATION = (
    EvseConfig(1, ((1, ConnectorType.cCCS2), (2, ConnectorType.cType2))),
    EvseConfig(2, ((1, ConnectorType.cCCS2), (2, ConnectorType.cType2))),
)


@dataclass(frozen=True)
class Config:
    evses: tuple[EvseConfig, ...] = DEFAULT_STATION
    reservations_enabled: bool = True
    non_evse_specific: bool = True
    command_endpoint: str = DEFAULT_COMMAND_ENDPOINT
    update_endpoint: str = DEFAULT_UPDATE_ENDPOINT
    metrics_endpoint: str | None = None   # http://HOST:PORT/PATH; None: no metrics endpoint
    tick: float = 0.01
    store_path: str | None = None        # None: the per-user default (store.default_store_path)
    store_synchronous: str = "full"
    secret_key_file: str | None = None   # CURVE on both sockets when set
    authorized_keys: str | None = None   # directory of client *.key certificates
    max_message_bytes: int = 64 * 1024
    turn_reply_bytes: int = 256 * 1024          # replies per loop turn; 0: no bound
    peer_unread_bytes: int = 1024 * 1024        # a peer's unread replies before it waits; 0: no bound
    turn_decide_ms: int = 10                    # deciding per loop turn; 0: no bound


_SECTIONS = {
    "reservations": {"enabled", "non_evse_specific"},
    "endpoints": {"command", "update", "metrics"},
    "timer": {"tick_ms"},
    "store": {"path", "synchronous"},
    "security": {"secret_key_file", "authorized_keys"},
    "limits": {"max_message_bytes", "turn_reply_bytes", "peer_unread_bytes", "turn_decide_ms"},
}


def load_config(path: str | Path | None = None) -> Config:
    if path is None:
        return Config()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start} is "
                          f"{exc.object[exc.start]:#04x}); TOML files are UTF-8") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively.
        raise ConfigError(f"{path}: arrays or tables nested too deeply to read") from None
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def config_from_dict(data: dict[str, Any]) -> Config:
    for key, value in data.items():
        if key == "evse":
            continue
        if key not in _SECTIONS:
            raise ConfigError(f"unknown section [{key}]; expected "
                              f"{', '.join(['[[evse]]', *(f'[{s}]' for s in _SECTIONS)])}")
        if not isinstance(value, dict):
            raise ConfigError(f"[{key}] must be a table")
        for name in value:
            if name not in _SECTIONS[key]:
                raise ConfigError(f"unknown key {key}.{name}; expected one of "
                                  f"{', '.join(sorted(_SECTIONS[key]))}")
    reservations = data.get("reservations", {})
    endpoints = data.get("endpoints", {})
    timer = data.get("timer", {})
    store = data.get("store", {})
    limits = data.get("limits", {})
    synchronous = _typed(store.get("synchronous", Config.store_synchronous), str,
                         "store.synchronous")
    if synchronous not in SYNCHRONOUS_MODES:
        raise ConfigError(f"store.synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, "
                          f"got {synchronous!r}")
    tick_ms = _typed(timer.get("tick_ms", round(Config.tick * 1000)), (int, float), "timer.tick_ms")
    if not 1 <= tick_ms <= 1000:
        raise ConfigError(f"timer.tick_ms must be between 1 and 1000, got {tick_ms}")
    security = data.get("security", {})
    if ("secret_key_file" in security) != ("authorized_keys" in security):
        raise ConfigError("[security] needs both secret_key_file and authorized_keys")
    max_message_bytes = _typed(limits.get("max_message_bytes", Config.max_message_bytes), int,
                               "limits.max_message_bytes")
    if not 256 <= max_message_bytes <= 64 * 1024 * 1024:
        raise ConfigError(f"limits.max_message_bytes must be between 256 and {64 * 1024 * 1024}, "
                          f"got {max_message_bytes}")
    fairness = {key: _typed(limits.get(key, getattr(Config, key)), int, f"limits.{key}")
                for key in ("turn_reply_bytes", "peer_unread_bytes", "turn_decide_ms")}
    for key, value in fairness.items():
        if value < 0:
            unit = "milliseconds" if key == "turn_decide_ms" else "bytes"
            raise ConfigError(f"limits.{key} must be 0 (no bound) or a number of {unit}, got {value}")
    metrics = endpoints.get("metrics")
    if metrics is not None:
        try:
            http_endpoint(_typed(metrics, str, "endpoints.metrics"))
        except MetricsError as exc:
            raise ConfigError(f"endpoints.metrics: {exc}") from None
    return Config(
        evses=_evses(data["evse"]) if "evse" in data else DEFAULT_STATION,
        reservations_enabled=_typed(reservations.get("enabled", Config.reservations_enabled), bool,
                                    "reservations.enabled"),
        non_evse_specific=_typed(reservations.get("non_evse_specific", Config.non_evse_specific),
                                 bool, "reservations.non_evse_specific"),
        command_endpoint=_typed(endpoints.get("command", Config.command_endpoint), str,
                                "endpoints.command"),
        update_endpoint=_typed(endpoints.get("update", Config.update_endpoint), str,
                               "endpoints.update"),
        metrics_endpoint=metrics,
        tick=tick_ms / 1000,
        store_path=_typed(store["path"], str, "store.path") if "path" in store else None,
        store_synchronous=synchronous,
        secret_key_file=_path(security, "secret_key_file"),
        authorized_keys=_path(security, "authorized_keys"),
        max_message_bytes=max_message_bytes,
        **fairness,
    )


def _path(section: dict[str, Any], key: str) -> str | None:
    return _typed(section[key], str, f"security.{key}") if key in section else None


def _typed(value: Any, kind: type | tuple[type, ...], name: str) -> Any:
    # TOML booleans are Python bools, which are also ints: check exactly.
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if type(value) not in kinds:
        expected = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"{name} must be {expected}, got {value!r}")
    return value


def _evses(items: Any) -> tuple[EvseConfig, ...]:
    if not isinstance(items, list) or not items:
        raise ConfigError("[[evse]] must be an array of tables with at least one EVSE")
    evses: list[EvseConfig] = []
    seen: set[int] = set()
    for n, item in enumerate(items, 1):
        where = f"evse #{n}"
        if not isinstance(item, dict):
            raise ConfigError(f"{where} must be a table")
        unknown = set(item) - {"id", "connectors"}
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]}; expected id, connectors")
        if "id" not in item:
            raise ConfigError(f"{where}: missing id")
        evse_id = _id(item["id"], f"{where}: id")
        if evse_id in seen:
            raise ConfigError(f"{where}: id {evse_id} is used by another EVSE")
        seen.add(evse_id)
        evses.append(EvseConfig(evse_id, _connectors(item.get("connectors"), f"evse {evse_id}")))
    return tuple(evses)


def _connectors(items: Any, where: str) -> tuple[tuple[int, str], ...]:
    if not isinstance(items, list) or not items:
        raise ConfigError(f"{where}: connectors must be a non-empty array of "
                          "{ id = N, type = \"...\" }")
    out: list[tuple[int, str]] = []
    for item in items:
        if not isinstance(item, dict) or "id" not in item:
            raise ConfigError(f"{where}: each connector needs an id, got {item!r}")
        unknown = set(item) - {"id", "type"}
        if unknown:
            raise ConfigError(f"{where}: unknown connector key {sorted(unknown)[0]}; expected id, type")
        connector_id = _id(item["id"], f"{where}: connector id")
        if any(connector_id == c for c, _ in out):
            raise ConfigError(f"{where}: connector id {connector_id} appears twice")
        kind = item.get("type", ConnectorType.Unknown)
        if not isinstance(kind, str) or kind not in ConnectorType.__members__:
            raise ConfigError(f"{where}: connector {connector_id}: type {kind!r} is not a "
                              f"ConnectorTypeEnum name ({', '.join(ConnectorType)})")
        out.append((connector_id, ConnectorType(kind)))
    return tuple(out)


def _id(value: Any, name: str) -> int:
    if type(value) is not int or not 0 <= value < 2 ** 31:
        raise ConfigError(f"{name} must be an integer from 0 to {2 ** 31 - 1}, got {value!r}")
    return value
