"""A pytest fixture with a real etcd cluster (Debian's etcd-server) on loopback.

``etcd_cluster`` starts one single-member cluster per test session in a temporary directory and
kills it (waiting for the process) at the end of the session, even when tests fail; tests
isolate their data by key prefix: ``etcd_url`` gives each test its own
``etcd://127.0.0.1:PORT/test-<id>``. Tests that kill members start their own
:class:`lab.etcd.EtcdCluster` inside ``async with``.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lab.etcd import EtcdCluster


@pytest.fixture(scope="session")
def etcd_cluster() -> Iterator[EtcdCluster]:
    with tempfile.TemporaryDirectory(prefix="vwire-etcd-") as directory:
        cluster = EtcdCluster(Path(directory), members=1)
        try:
            # In a thread of its own: the fixture may be first asked for inside a running loop.
            with ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, cluster.start()).result()
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture
def etcd_url(etcd_cluster: EtcdCluster) -> str:
    return f"{etcd_cluster.url}/test-{uuid.uuid4().hex[:12]}"
