"""``aggregator run`` as a real process: serving, conditional GET, signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import CIS_SECURITY, DATA, FeedServer, write_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    def __init__(
        self, config: Path, tmp_path: Path, *extra: str, env: dict[str, str] | None = None
    ):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = (tmp_path / "daemon.log").open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aggregator",
                "run",
                "--config",
                str(config),
                "--listen",
                f"127.0.0.1:{self.port}",
                *extra,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.log_path = tmp_path / "daemon.log"

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("daemon exited:\n" + self.log_path.read_text())
            try:
                if requests.get(self.base + "/healthz", timeout=1).status_code in (200, 503):
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise AssertionError("daemon did not start:\n" + self.log_path.read_text())

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture
def daemon(tmp_path: Path, feed_server: FeedServer) -> Iterator[Running]:
    url = feed_server.add("/belta.xml", (DATA / "feeds" / "belta-en.xml").read_bytes())
    config = write_config(
        tmp_path / "config",
        settings={"database": f"sqlite:///{tmp_path}/data/agg.db"},
        sources=[
            {"id": "belta-en", "url": url, "name": "BELTA", "interval": "1h"},
            {"id": "dead", "url": "http://127.0.0.1:9/rss", "timeout": "2s"},
        ],
        topics=[CIS_SECURITY],
    )
    running = Running(config, tmp_path)
    yield running
    running.stop()


def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_run_serves_topic_feeds_with_conditional_get_and_stops_on_sigterm(
    daemon: Running,
) -> None:
    daemon.wait_ready()
    feed_url = daemon.base + "/topics/cis-security.atom"

    def polled() -> bool:
        return b"Secretaries of CSTO" in requests.get(feed_url, timeout=5).content

    wait_for(polled)
    response = requests.get(feed_url, timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/atom+xml; charset=utf-8"
    etag = response.headers["etag"]
    assert etag and response.headers["last-modified"]

    again = requests.get(feed_url, headers={"If-None-Match": etag}, timeout=5)
    assert again.status_code == 304
    assert again.content == b""
    since = requests.get(
        feed_url, headers={"If-Modified-Since": response.headers["last-modified"]}, timeout=5
    )
    assert since.status_code == 304

    head = requests.head(feed_url, timeout=5)
    assert head.status_code == 200 and head.headers["etag"] == etag and head.content == b""
    assert requests.get(daemon.base + "/topics/nope.atom", timeout=5).status_code == 404
    health = requests.get(daemon.base + "/healthz", timeout=5)
    assert health.status_code == 200 and health.json()["store"] is True

    started = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 10
    log = daemon.log_path.read_text()
    assert "polled source=belta-en status=200" in log
    assert "polled source=dead" in log  # the dead source failed politely
