"""Engine adapters. Only vLLM for now."""
SUPPORTED_ENGINES = ("vllm",)
