"""The mesh model (IR), validation of the standard resources, and pure translation.

Nothing here does I/O.
"""
