"""The tutorial's `midi.utils.midiread/midiwrite`, served by the port's reader and writer.

`dltutorials_is.datasets.midi` reproduces the tutorial reader's piano-rolls exactly (its module
docstring lists the timing rules), so the original `rnnrbm.py` trains on the same arrays as the port.
"""
from dltutorials_is.datasets.midi import midiread, midiwrite  # noqa: F401
