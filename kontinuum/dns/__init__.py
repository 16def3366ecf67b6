"""`clusterset.local` DNS: the Multi-Cluster Services names of the service plane.

`zone` turns a plane into records (pure), `answer` turns a query into a response (pure),
`server` serves them over UDP and TCP, `thread` runs the server on an event loop of its own.
The package depends on `kontinuum.control` only: the composition root hands the server a
callable that returns the current plane.
"""

from kontinuum.dns.answer import answer, respond
from kontinuum.dns.server import ClusterSetResponder, DnsServer, PlaneProvider
from kontinuum.dns.thread import DnsThread
from kontinuum.dns.zone import ORIGIN, SCHEMA_VERSION, Zone, ZoneOptions, build_zone

__all__ = [
    "ORIGIN",
    "SCHEMA_VERSION",
    "ClusterSetResponder",
    "DnsServer",
    "DnsThread",
    "PlaneProvider",
    "Zone",
    "ZoneOptions",
    "answer",
    "build_zone",
    "respond",
]
