"""ASR export stage: sherpa-onnx model folders (Whisper conversion, registration, tiny test models)."""
