"""Envoy resources written as YAML or JSON (Envoy's own JSON mapping, `@type` included)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import any_pb2, descriptor_pool, json_format, message_factory

from kontinuum.xds import Resource, Snapshot

_TYPE_PREFIX = "type.googleapis.com/"


class ResourceFileError(ValueError):
    """A resource file that cannot be turned into a consistent snapshot."""


def _type_names(value: Any) -> Iterable[str]:
    if isinstance(value, Mapping):
        type_url = value.get("@type")
        if isinstance(type_url, str) and type_url.startswith(_TYPE_PREFIX):
            yield type_url[len(_TYPE_PREFIX) :]
        for item in value.values():
            yield from _type_names(item)
    elif isinstance(value, list):
        for item in value:
            yield from _type_names(item)


@cache
def _import_proto_package(package: str) -> None:
    """Import every generated module of a proto package, registering its message types."""
    try:
        module = importlib.import_module(package)
    except ImportError:
        return
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        if info.name.endswith("_pb2"):
            importlib.import_module(f"{package}.{info.name}")


def parse_resource(document: Mapping[str, Any]) -> Any:
    """One resource from its JSON mapping; every `@type` inside it must be a known message."""
    for name in set(_type_names(document)):
        _import_proto_package(name.rsplit(".", 1)[0])
    type_url = document.get("@type")
    if not isinstance(type_url, str):
        raise ResourceFileError("a resource needs an '@type' naming its message type")
    packed = json_format.ParseDict(dict(document), any_pb2.Any())
    descriptor = descriptor_pool.Default().FindMessageTypeByName(type_url[len(_TYPE_PREFIX) :])
    message = message_factory.GetMessageClass(descriptor)()
    packed.Unpack(message)
    return message


def load_snapshot(path: Path) -> Snapshot:
    """A view's snapshot from a YAML/JSON file holding a list of resources.

    The file may also be a mapping with the list under `resources`.
    """
    try:
        documents = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ResourceFileError(f"{path}: {error}") from error
    explicitly_empty = isinstance(documents, Mapping) and documents.get("resources") == []
    if isinstance(documents, Mapping):
        documents = documents.get("resources")
    if not documents and not explicitly_empty:
        # Refused so that a file caught half-written keeps its view: to empty a view,
        # write `resources: []`; to remove it, delete the file.
        raise ResourceFileError(f"{path}: no resources (write `resources: []` for none)")
    if not isinstance(documents, list):
        raise ResourceFileError(f"{path}: expected a list of resources")
    resources = []
    for index, document in enumerate(documents):
        try:
            if not isinstance(document, Mapping):
                raise ResourceFileError("expected a mapping")
            resources.append(Resource.of(parse_resource(document)))
        except (json_format.ParseError, KeyError, TypeError, ValueError) as error:
            raise ResourceFileError(f"{path}: resource #{index + 1}: {error}") from error
    try:
        return Snapshot(resources)
    except ValueError as error:
        raise ResourceFileError(f"{path}: {error}") from error


def view_files(directory: Path) -> dict[str, Path]:
    """The view files of a directory: `<view>.yaml`, `<view>.yml` or `<view>.json`."""
    return {
        p.stem: p
        for p in sorted(directory.iterdir())
        if p.suffix in {".yaml", ".yml", ".json"} and p.is_file()
    }
