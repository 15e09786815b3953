"""daxd: apply a declarative memory policy to DAX devices."""

__version__ = "0.1.0"
