"""bench.common.running stops its fabric however the benchmark ends, also when stderr is gone:
a benchmark piped into ``head`` died on its next progress line (BrokenPipeError) and left a whole
fabric running (processes, namespaces)."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bench import common


class FakeFabric:
    """Records ``down`` and ``save_logs``; its state directory's parent is ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.downs = 0
        self.saved: list[Path] = []
        self.topology = SimpleNamespace(state_dir=tmp / "run" / "state")

    def down(self, grace: float) -> list[str]:
        self.downs += 1
        return []

    def save_logs(self, dest: Path) -> None:
        self.saved.append(dest)


class ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


@pytest.fixture
def fabric(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeFabric:
    monkeypatch.setattr(common, "FAILED_LOGS", tmp_path / "logs")
    return FakeFabric(tmp_path)


def test_the_fabric_is_stopped_when_stderr_is_closed(
    fabric: FakeFabric, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stderr", ClosedPipe())
    with pytest.raises(BrokenPipeError), common.running("bench", cast(Any, fabric)):
        common.progress("bench", "measuring")  # the benchmark's own line fails first
    assert fabric.downs == 1 and fabric.saved == [common.FAILED_LOGS]


def test_the_fabric_is_stopped_after_a_normal_end(fabric: FakeFabric) -> None:
    with common.running("bench", cast(Any, fabric)):
        pass
    assert fabric.downs == 1 and fabric.saved == []
