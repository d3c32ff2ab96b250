"""VisCodex side by side (the Space's entry point): the app lives in viscodex.app.ui, see docs/app.md."""
import spaces  # noqa: F401,I001 - must come before anything that touches CUDA (ZeroGPU)

from viscodex.app.ui import serve

app = serve(launch=__name__ == "__main__")
