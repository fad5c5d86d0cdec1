"""Generate (or check) the Python code for the .proto files in api/proto.

Usage: ``python -m api.generate`` writes ``*_pb2.py``, ``*_pb2_grpc.py`` and their ``.pyi`` stubs
beside the .proto files; ``python -m api.generate --check`` regenerates into a temporary folder and
exits 1, naming the stale files, when the committed code differs from what the pinned generator
(grpcio-tools and mypy-protobuf, pinned in pyproject.toml) produces.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "api" / "proto"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def _proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("*.proto"))


def generate(out_dir: Path) -> None:
    """Run protoc with the grpc and mypy plugins, writing under ``out_dir/api/proto``."""
    include = Path(protoc.__file__).parent / "_proto"
    bindir = Path(sys.executable).parent
    args = [
        "protoc",
        f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(p.relative_to(ROOT)) for p in _proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed: see the messages above")


def _generated_names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}


def check() -> list[str]:
    """Return the generated files that are missing, stale or no longer produced."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "api" / "proto"
        expected, committed = _generated_names(fresh), _generated_names(PROTO_DIR)
        stale = sorted(expected ^ committed)
        stale += sorted(
            name
            for name in expected & committed
            if not filecmp.cmp(fresh / name, PROTO_DIR / name, shallow=False)
        )
        return stale


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if committed code is stale")
    ns = parser.parse_args()
    if ns.check:
        stale = check()
        if stale:
            print("generated protobuf code is stale: " + ", ".join(stale), file=sys.stderr)
            print("fix: run `python -m api.generate` and commit the result", file=sys.stderr)
            return 1
        print("generated protobuf code is up to date")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for old in _generated_names(PROTO_DIR):
            (PROTO_DIR / old).unlink()
        for path in (Path(tmp) / "api" / "proto").iterdir():
            shutil.copy2(path, PROTO_DIR / path.name)
            print(f"wrote api/proto/{path.name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
