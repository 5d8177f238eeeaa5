"""The file waxctl deploys: the dataflow itself comes from the image.

Bytewax's Helm chart copies this file into the pod and runs it with
`python -m bytewax.run`, so the code that runs is the code the image was built
from, never a copy that could drift from it.
"""

from dataflows.enrich import flow

__all__ = ["flow"]
