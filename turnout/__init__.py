"""Turnout: serve many scoring scripts behind NVIDIA Triton, with blue/green endpoints in front."""

from turnout.errors import BadInput, TurnoutError

__all__ = ["BadInput", "TurnoutError"]
__version__ = "0.1.0"
