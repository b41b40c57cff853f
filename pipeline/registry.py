"""Models registered before the move to subpackages store a pyfunc file that imports HF_ARTIFACT from here."""

from pipeline.handoff.registry import HF_ARTIFACT

__all__ = ["HF_ARTIFACT"]
