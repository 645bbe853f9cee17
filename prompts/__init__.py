"""Versioned prompt files (``<name>/v<N>.yaml``), their loader, release lock and A/B selection.

Imports nothing else of ours.
"""

from prompts.lock import LockProblem, PromptReleaseError
from prompts.registry import Prompt, PromptRegistry, RenderedPrompt

__all__ = ["LockProblem", "Prompt", "PromptRegistry", "PromptReleaseError", "RenderedPrompt"]
