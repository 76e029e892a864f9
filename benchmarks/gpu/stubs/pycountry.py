"""An empty stand-in for pycountry on GPU hosts whose staged vLLM lacks it.

transformers' processors (Gemma 3's among them) import every tokenizer backend when they check their
arguments, mistral_common's included, and mistral_common imports pydantic_extra_types.language_code,
which needs pycountry at import time only (its language lists). No start of benchmarks/gpu/ validates
a language code, so empty lists do. Put this folder on PYTHONPATH only where pycountry is missing.
"""
languages: list = []
language_families: list = []
countries: list = []
