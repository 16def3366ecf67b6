"""Federation: zone control planes that dial out to the global one (docs/federation.md).

The protocol is `proto/kontinuum/federation/v1/federation.proto`, xDS Delta messages in
both directions: ZoneToGlobal with the roles turned around (the zone sends its site's
objects, the global subscribes and ACKs), GlobalToZone with xDS's own (the zone subscribes
to the fleet, the global sends what differs).
"""
