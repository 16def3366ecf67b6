#!/bin/sh
# xds-protos ships a stale copy of opentelemetry-proto's modules under the same paths
# (grpc/grpc#42926); whichever package pip installed last owns them. kontinuum itself imports
# neither, but the tests decode OTLP with opentelemetry-proto's classes, which the stale ones
# lack. Reinstall opentelemetry-proto's own, at the version
# installed. Usage: scripts/own-otel-protos.sh PYTHON
set -eu
python=${1:-python3}
if "$python" -c 'from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope' 2>/dev/null; then
    exit 0
fi
version=$("$python" -c 'from importlib.metadata import version; print(version("opentelemetry-proto"))')
"$python" -m pip install --quiet --no-cache-dir --force-reinstall --no-deps "opentelemetry-proto==$version"
"$python" -c 'from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope'
