"""Live speech-to-picture: streaming ASR partials -> prompt -> speculative generation -> safety gate -> picture.

See docs/live.md. Torch-free, like the rest of the runtime.
"""
