"""Per-trial affect measures: text and picture valence, their alignment, and the safety gate that uses them.

Torch-free: text affect uses lexicons, picture affect uses pixel statistics or embeddings that the already-running
image encoder produced.
"""
