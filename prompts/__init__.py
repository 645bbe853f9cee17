"""Versioned prompt files (``<name>/v<N>.yaml``) and their loader. Imports nothing else of ours."""

from prompts.registry import Prompt, PromptRegistry, RenderedPrompt

__all__ = ["Prompt", "PromptRegistry", "RenderedPrompt"]
