"""viscodex: build multimodal code models by merging a code LLM into a Qwen2.5-VL language backbone."""
from ._version import __version__
