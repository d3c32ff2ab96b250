"""`python -m viscodex.app.assets`: redraw the bundled example images."""
from . import make_examples

for p in make_examples():
    print(p)
