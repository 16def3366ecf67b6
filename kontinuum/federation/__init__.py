"""Federation: zone control planes that dial out to the global one (docs/federation.md).

The protocol is `proto/kontinuum/federation/v1/federation.proto`, xDS Delta messages with
the roles turned around: the zone sends resources, the global subscribes and ACKs.
"""
