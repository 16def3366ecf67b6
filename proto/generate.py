"""Generate kontinuum's protocol code into the package: `python proto/generate.py`.

Compiles every `.proto` below `proto/` with grpcio-tools' protoc into the package tree
(`kontinuum/federation/v1/federation_pb2.py` and its `.pyi`). The build runs it
(`setup.py`), so the generated code is never edited by hand nor committed.

The Envoy API the protocol reuses comes from xds-protos, which ships compiled modules and
no `.proto` files: their descriptors (the file and everything it imports) are written as
a FileDescriptorSet that protoc reads in place of sources (`--descriptor_set_in`).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
# The modules of the Envoy API the .proto files import, by their import path.
IMPORTED = ("envoy.service.discovery.v3.discovery_pb2",)


def _descriptor_set(path: Path) -> None:
    import importlib

    from google.protobuf import descriptor_pb2

    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(descriptor: object) -> None:
        name = descriptor.name  # type: ignore[attr-defined]
        if name in files:
            return
        for dependency in descriptor.dependencies:  # type: ignore[attr-defined]
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        descriptor.CopyToProto(proto)  # type: ignore[attr-defined]
        files[name] = proto

    for module in IMPORTED:
        add(importlib.import_module(module).DESCRIPTOR)
    path.write_bytes(
        descriptor_pb2.FileDescriptorSet(file=list(files.values())).SerializeToString()
    )


def generate(out: Path = ROOT) -> list[Path]:
    """Compile every .proto of `proto/` into `out`; the generated files."""
    from grpc_tools import protoc

    sources = sorted(PROTO.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as scratch:
        imported = Path(scratch) / "imported.pb"
        _descriptor_set(imported)
        status = protoc.main(
            [
                "protoc",
                f"--proto_path={PROTO}",
                f"--descriptor_set_in={imported}",
                f"--python_out={out}",
                f"--pyi_out={out}",
                *(str(source) for source in sources),
            ]
        )
    if status != 0:
        raise RuntimeError(f"protoc failed ({status}) on {', '.join(map(str, sources))}")
    generated = [
        out / source.relative_to(PROTO).with_name(source.stem + suffix)
        for source in sources
        for suffix in ("_pb2.py", "_pb2.pyi")
    ]
    return generated


if __name__ == "__main__":
    for path in generate():
        print(path.relative_to(ROOT), file=sys.stderr)
