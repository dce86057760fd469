"""Generates agentserve/v1/*_pb2*.py from protos/ with the pinned grpcio-tools.

    python scripts/gen_protos.py           # (re)write the generated code
    python scripts/gen_protos.py --check   # exit 1 if the committed code is stale

The package of the .proto files (`agentserve.v1`) matches the output folder, so the generated
imports need no rewriting.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out: Path) -> list[Path]:
    """Runs protoc over every .proto under protos/ into `out`; returns the files written."""
    sources = sorted(PROTOS.rglob("*.proto"))
    include = str(resources.files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--pyi_out={out}",
        *map(str, sources),
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    return sorted(p for p in out.rglob("*") if p.name.endswith(GENERATED_SUFFIXES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        written = generate(out)
        stale = []
        for path in written:
            target = ROOT / path.relative_to(out)
            if args.check:
                if not target.exists() or not filecmp.cmp(path, target, shallow=False):
                    stale.append(str(target.relative_to(ROOT)))
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
        if args.check:  # generated files whose .proto is gone
            produced = {ROOT / p.relative_to(out) for p in written}
            for package in {p.parent for p in produced}:
                for path in sorted(package.iterdir()):
                    if path.name.endswith(GENERATED_SUFFIXES) and path not in produced:
                        stale.append(f"{path.relative_to(ROOT)} (no .proto generates it)")
        if stale:
            print("generated gRPC code is stale; run `make proto`:", *stale, sep="\n  ")
            return 1
    print("generated gRPC code is current" if args.check else f"wrote {len(written)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
