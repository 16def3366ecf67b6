"""kontinuum: a multi-cluster service mesh control plane built on xDS."""

__version__ = "0.1.0"
