"""Speech: streaming sherpa-onnx recognition, audio sources, ASR folders (see docs/speech.md)."""
