"""The Python API: the README's examples run as written, diffusers' argument names give the engine's own numbers,
any picture mode and any sample rate are accepted, and `import edge_cer` loads nothing heavy."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from edge_cer import Pipeline, Recognizer
from edge_cer.errors import EdgeCerError
from edge_cer.pipeline import SDPipeline
from tests.conftest import TINY_HEIGHT, TINY_WIDTH
from tests.test_speech_streaming import SR, speech_like, streaming_dirs  # noqa: F401 - a fixture

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_examples() -> list[str]:
    section = README.read_text().split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.fixture(scope="module")
def sd(tiny_export):
    return SDPipeline.from_export(tiny_export())


def test_readme_examples_run_as_written(tiny_export, streaming_dirs, stimulus_png, tmp_path,  # noqa: F811
                                        monkeypatch, capsys):
    examples = readme_examples()
    assert len(examples) == 3 and all(len(e.strip().splitlines()) <= 12 for e in examples)
    (tmp_path / "engines").mkdir()
    (tmp_path / "engines" / "tiny-sd15").symlink_to(tiny_export())
    (tmp_path / "engines" / "asr").symlink_to(streaming_dirs["transducer"])
    Image.open(stimulus_png).convert("L").save(tmp_path / "stimulus.png")  # greyscale on purpose
    sf.write(tmp_path / "speech.wav", speech_like([0.5, 1.5, 2]), SR)
    monkeypatch.chdir(tmp_path)
    names = {}
    for example in examples:
        exec(compile(example, "README.md", "exec"), names)
    assert Image.open(tmp_path / "supportive.png").size == (TINY_WIDTH, TINY_HEIGHT)
    assert capsys.readouterr().out.strip()  # the tiny random model decodes noise bursts to letters
    assert sorted(names["store"].finished_trials()) == [t.trial for t in names["plan"]]


def test_diffusers_names_give_the_engines_numbers(sd, stimulus_png):
    torch = pytest.importorskip("torch")
    image = Image.open(stimulus_png).convert("RGB")
    ours = sd(image, "a calm lake", "blur", steps=3, strength=0.5, guidance=2.0, ip_scale=0.3, seed=5).image
    theirs = Pipeline(sd)("a calm lake", image=image, negative_prompt="blur", num_inference_steps=3, strength=0.5,
                          guidance_scale=2.0, ip_adapter_scale=0.3, generator=torch.Generator().manual_seed(5))
    np.testing.assert_array_equal(theirs.output.image, ours)
    assert theirs.images[0].size == (TINY_WIDTH, TINY_HEIGHT) and theirs.images[0].mode == "RGB"
    with pytest.raises(EdgeCerError, match="not both"):
        Pipeline(sd)("x", image=image, generator=1, seed=1)


def test_any_picture_mode_or_array_is_its_rgb_picture(sd, stimulus_png):
    pipe = Pipeline(sd)
    grey = Image.open(stimulus_png).convert("L")
    rgba = Image.open(stimulus_png).convert("RGBA")
    palette = Image.open(stimulus_png).convert("P")

    def picture(image):
        return pipe("a calm lake", image=image, num_inference_steps=2, generator=0).output.image

    for image, as_rgb in ((grey, grey.convert("RGB")), (rgba, rgba.convert("RGB")), (palette, palette.convert("RGB")),
                          (np.asarray(grey), grey.convert("RGB")), (np.asarray(grey)[..., None] / 255.0, grey.convert("RGB")),
                          (np.asarray(rgba), rgba.convert("RGB")), (str(stimulus_png), Image.open(stimulus_png))):
        np.testing.assert_array_equal(picture(image), picture(as_rgb.convert("RGB")))
    # The engine itself takes any PIL mode too (the session and the CLI pass pictures straight to it).
    np.testing.assert_array_equal(sd(grey, "a calm lake", steps=2).image, sd(grey.convert("RGB"), "a calm lake", steps=2).image)
    with pytest.raises(EdgeCerError, match="shape"):
        pipe("x", image=np.zeros((4, 4, 2)))


def test_a_recording_at_any_rate_is_resampled(streaming_dirs, tmp_path):  # noqa: F811
    from scipy.signal import resample_poly

    recognizer = Recognizer.from_pretrained(streaming_dirs["transducer"])
    audio = speech_like([1, 2, 2, 1, 1])
    sf.write(tmp_path / "speech.wav", audio, SR)
    at_16k = recognizer.transcribe(audio, sample_rate=SR)
    assert recognizer.transcribe(tmp_path / "speech.wav").text == at_16k.text and len(at_16k.finals) == 2
    at_48k = recognizer.transcribe(resample_poly(audio, 3, 1).astype(np.float32), sample_rate=48000)
    assert len(at_48k.finals) == 2
    for a, b in zip(at_48k.finals, at_16k.finals):
        assert abs(a.t_endpoint - b.t_endpoint) < 0.1 and abs(a.t_final - b.t_final) < 0.1
    with pytest.raises(EdgeCerError, match="sample_rate"):
        recognizer.transcribe(audio)


def test_import_edge_cer_loads_nothing_heavy():
    code = ("import sys, edge_cer; heavy = ('edge_cer.api', 'edge_cer.pipeline', 'onnxruntime', 'torch', 'pandas'); "
            "print([m for m in heavy if m in sys.modules]); edge_cer.Pipeline, edge_cer.Recognizer, edge_cer.Session; "
            "print('torch' in sys.modules, 'edge_cer.api' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "False True"
