"""Code generated from proto/kontinuum/federation/v1/federation.proto at build time
(`python proto/generate.py`): never edited by hand nor committed."""
