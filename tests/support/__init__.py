"""Helpers shared by the test suites: ports, polling, Envoy resource builders."""
