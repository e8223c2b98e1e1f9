"""attn-install: probe the machine, resolve attention backends from data, install and verify them."""

__version__ = "0.1.0"
