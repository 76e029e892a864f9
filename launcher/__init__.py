"""launcher: plan, launch and supervise vLLM servers."""

__version__ = "0.1.0"
