"""An OpenAI-compatible LLM gateway: cache, route by difficulty, account for every token."""

__version__ = "0.1.0"
