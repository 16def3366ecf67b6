"""The fleet-wide objects, whichever source holds them (fleet files, a config cluster), read
into one `FleetConfig`. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Iterable

from kontinuum.control.fleet import parse_fleet_objects
from kontinuum.control.gateway_api import parse_routing
from kontinuum.control.grants import parse_grants
from kontinuum.control.model import ConfigError, FleetConfig
from kontinuum.control.objects import Document


def parse_fleet_config(docs: Iterable[Document]) -> tuple[FleetConfig, list[ConfigError]]:
    """ClusterProfiles, ReferenceGrants, routes, Gateways and LocalityPolicies of the
    documents, and every error; an object with an error is left out whole."""
    documents = list(docs)
    sites, errors = parse_fleet_objects(documents)
    grants, grant_errors = parse_grants(documents)
    routing, routing_errors = parse_routing(documents)
    return FleetConfig(sites, grants, routing), [*errors, *grant_errors, *routing_errors]
