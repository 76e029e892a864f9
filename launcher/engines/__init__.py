"""Engine adapters. Only vLLM for now."""
SUPPORTED_ENGINES = ("vllm",)


def check_engine(engine: str) -> None:
    """BadInput for any engine but vLLM."""
    from ..errors import BadInput

    if engine.lower() not in SUPPORTED_ENGINES:
        raise BadInput(f"model engine '{engine}' is not supported.", hint="Only 'vllm' is, for now.")
