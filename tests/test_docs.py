"""The documents cannot drift from the code: every protocol word the code
defines is in PROTOCOL.md, the README's protocol summary names every error
code and command, and the README's example session prints what it shows.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actor.config import _SECTIONS, Config
from actor.server import Actor
from actor.store import MemoryStore
from protocol.messages import ARGS
from protocol.vocabulary import (
    Command, ConnectorEventType, ConnectorState, ConnectorType, ErrorCode, ReservationCheckStatus,
    ReservationResult, ReservationUpdateStatus, Topic,
)

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = (ROOT / "protocol" / "PROTOCOL.md").read_text()
README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent


def documented(text: str) -> set[str]:
    """Every word written as code (`word`) or listed in a code span of several words."""
    return {word for span in re.findall(r"`([^`]+)`", text) for word in re.findall(r"[\w.-]+", span)}


def stats_keys() -> set[str]:
    actor = Actor(Config(), MemoryStore())
    return set(actor._stats())


@pytest.mark.parametrize("vocabulary", [
    Command, ErrorCode, Topic, ReservationResult, ReservationCheckStatus, ReservationUpdateStatus,
    ConnectorType, ConnectorState, ConnectorEventType,
], ids=lambda v: v.__name__)
def test_every_protocol_word_is_in_protocol_md(vocabulary):
    assert set(vocabulary) - documented(PROTOCOL) == set()


def test_every_stats_key_is_in_protocol_md():
    assert stats_keys() - documented(PROTOCOL) == set()


def test_every_command_has_a_parser():
    assert set(ARGS) == set(Command)


def test_the_readme_module_map_names_every_module():
    table = README[README.index("## How decisions are made"):README.index("## Example session")]
    modules = {str(path.relative_to(ROOT)) for package in ("actor", "protocol")
               for path in (ROOT / package).rglob("*.py")
               if path.name not in ("__init__.py", "__main__.py")}
    assert {m for m in modules if f"`{m}`" not in table} == set()


def test_every_config_key_is_in_the_readme():
    """In the example config (`key = ...` under its [section]) or named as `[section] key`."""
    def shown(section: str, key: str) -> bool:
        block = README.split(f"[{section}]\n", 1)
        return (len(block) == 2 and f"\n{key} =" in "\n" + block[1].split("\n\n")[0]) or \
            f"[{section}] {key}" in README
    assert {f"{section}.{key}" for section, keys in _SECTIONS.items() for key in keys
            if not shown(section, key)} == set()


def test_the_readme_summary_names_every_error_code_and_command():
    summary = README[README.index("## Protocol summary"):]
    summary = summary[:summary.index("\n## ", 1)]
    assert set(ErrorCode) - documented(summary) == set()
    assert set(Command) - documented(summary) == set()


# -- the README's example session ----------------------------------------------------------

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def example_session() -> list[tuple[str, list[str]]]:
    """(command, the lines the README shows after it) for each `$ ` line of the example."""
    block = README[README.index("## Example session"):]
    block = block[:block.index("\n## ", 1)]
    steps: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if steps and line and not line.startswith("    "):
            break   # the end of the transcript
        if line.startswith("    $ kill"):
            continue   # the harness stops what the session started in the background
        if line.startswith("    $ "):
            steps.append((line[6:].split("  #")[0].strip(), []))
        elif line.startswith("    ") and steps:
            steps[-1][1].append(line[4:])
    return steps


def normalised(line: str) -> str:
    return TIMESTAMP.sub("<time>", line)


def test_the_example_session_prints_what_the_readme_shows_twice_in_a_row(tmp_path):
    for run in range(2):
        assert run_example(tmp_path / f"run{run}") == expected_example(), f"run {run + 1}"


def expected_example() -> tuple[list[list[str]], list[str]]:
    """What each foreground command prints, and what `watch` prints in the background."""
    outputs, watched = [], []
    for command, lines in example_session():
        if command.endswith("&"):
            outputs.append([])
            continue
        mine = [normalised(line) for line in lines if not line.startswith('{"topic"')]
        watched += [normalised(line) for line in lines if line.startswith('{"topic"')]
        outputs.append(mine)
    return outputs, watched


def run_example(directory: Path) -> tuple[list[list[str]], list[str]]:
    """Run the example's commands with the real console scripts, on ports of
    our own (the only change to them), and collect what they print."""
    directory.mkdir()
    from bench.procs import free_port   # noqa: PLC0415 - the tests' one place for free ports
    ports = [free_port(), free_port()]
    endpoints = [f"tcp://127.0.0.1:{p}" for p in ports]
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "XDG_STATE_HOME": str(directory)}
    outputs: list[list[str]] = []
    background: list[subprocess.Popen] = []
    watch_out = directory / "watch.out"
    try:
        for command, _ in example_session():
            argv = [word for word in shlex.split(command.rstrip("&").replace(".venv/bin/", ""))
                    if word != "2>/dev/null"]
            if argv[0] == "reservation-actor":
                argv += ["--command-endpoint", endpoints[0], "--update-endpoint", endpoints[1]]
            else:
                argv[1:1] = ["--endpoint", endpoints[0], "--update-endpoint", endpoints[1]]
            if command.endswith("&"):
                out = open(watch_out if argv[-1] == "watch" else directory / "actor.log", "w")
                background.append(subprocess.Popen(argv, env=env, stdout=out,
                                                   stderr=subprocess.STDOUT, cwd=directory))
                wait_ready(argv, endpoints[0], env)
                outputs.append([])
                continue
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30,
                                  cwd=directory)
            outputs.append([normalised(line) for line in done.stdout.splitlines()])
        expected_updates = len(expected_example()[1])
        deadline = time.monotonic() + 10
        while len(watch_out.read_text().splitlines()) < expected_updates:
            assert time.monotonic() < deadline, watch_out.read_text()
            time.sleep(0.05)
    finally:
        for process in reversed(background):
            process.send_signal(signal.SIGINT)
            process.wait(10)
    watched = [normalised(line) for line in watch_out.read_text().splitlines()]
    return outputs, watched


def wait_ready(argv: list[str], command_endpoint: str, env: dict) -> None:
    """Until the background command is serving (the actor) or subscribed (watch)."""
    deadline = time.monotonic() + 15
    ping = ["reservation-ctl", "--endpoint", command_endpoint, "--timeout", "0.5", "ping"]
    while subprocess.run(ping, env=env, capture_output=True).returncode != 0:
        assert time.monotonic() < deadline, "the actor did not start"
    if argv[-1] == "watch":
        # The Watcher subscribes, then takes its snapshot. The subscription travels
        # on its own connection, started first; the next command is a new process,
        # whose start-up alone outlasts that by far (as a person typing does).
        stats = ["reservation-ctl", "--endpoint", command_endpoint, "stats"]
        first = None
        for asked in itertools.count(1):
            requests = json.loads(subprocess.run(stats, env=env, capture_output=True,
                                                 text=True).stdout)["requests"]
            first = requests if first is None else first
            if requests - first >= asked:     # more than our own stats calls
                return
            assert time.monotonic() < deadline, "watch did not start"


def _defined_names() -> set[str]:
    """Every function, class, method and `Class.method` defined in actor/ and protocol/."""
    import ast   # noqa: PLC0415 - only this test reads the code as code
    names: set[str] = set()
    for package in ("actor", "protocol"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    names.add(node.name)
                if isinstance(node, ast.ClassDef):
                    methods = [item.name for item in node.body if isinstance(item, ast.FunctionDef)]
                    names.update(methods)   # named alone where the class is clear from the text
                    names.update(f"{node.name}.{method}" for method in methods)
    return names


def test_every_name_the_architecture_section_follows_exists():
    section = README[README.index("## Architecture"):README.index("## Example session")]
    named = {word for word in re.findall(r"`([A-Za-z_][\w.]*)`", section)
             if not word.endswith(".py")}
    protocol_words = {str(member) for vocabulary in (
        Command, ErrorCode, ReservationResult, ReservationUpdateStatus, Topic) for member in vocabulary}
    missing = {word for word in named - protocol_words
               if word not in _defined_names() and not word.startswith(":")}
    assert missing == set(), f"the Architecture section names what the code does not define: {missing}"
