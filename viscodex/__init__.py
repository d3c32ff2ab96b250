"""viscodex: build multimodal code models by merging a code LLM into a Qwen2.5-VL language backbone."""
__version__ = "0.1.0"
