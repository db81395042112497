"""The one error class of the NIR interchange (a ValueError, so the CLI prints it as one line)."""

from __future__ import annotations


class NirError(ValueError):
    """A model that cannot be exported to NIR, or a NIR file that cannot be imported exactly:
    the message names the layer, neuron or node and says why (docs/nir.md)."""
