"""The bad-input corpus: each case is one command a user could type with one thing wrong (a picture, an engine
folder, a prompt, audio, a protocol, norms, a scripted file, a key file, a data folder, an analysis input).

Every case must exit with status 2 and print exactly one line that names the file or option and says how to fix
it, with no traceback, and leave the study folder byte for byte as it was. Commands run in-process through
`edge_cer.cli.main` (a subprocess per case would cost a minute); the study they run against holds one finished
session, made once per module.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_cer.cli import main
from tests.study_helpers import NORMS, PNG_MAGIC, PROTOCOL, SCRIPT, Study, png, png_header, snapshot, wav

def manifest(**changes) -> dict:
    """A manifest that passes the layout checks (with `changes` applied); its files are up to the case."""
    base = {"format": "edge-cer-sd-export", "format_version": 1,
            "model": {"dims": {"text_hidden": 32, "latent_channels": 4, "image_size": 32, "image_embed_dim": 32,
                               "image_tokens": 1, "ip_tokens": 4, "adapter": "base"}},
            "graphs": {"text_encoder": {"file": "text_encoder/model.onnx"}},
            "files": {"text_encoder/model.onnx": hashlib.sha256(b"not onnx").hexdigest()}}
    return base | changes


def protocol_with(line: str, section: str | None = None) -> str:
    """The corpus protocol plus one line (in `section`, after the existing [design] keys when that is the section)."""
    if section == "design":
        return PROTOCOL + line + "\n"
    return PROTOCOL.replace("[design]", line + "\n[design]", 1) if section is None else PROTOCOL + f"[{section}]\n{line}\n"


@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Study], list[str]]
    names: str  # the file or option the line must name (a substring)
    fix: str  # a substring of the fix it must give


def s_(attr: str, *args, **kwargs) -> Callable[[Study], list[str]]:
    return lambda study: getattr(study, attr)(*args, **kwargs)


CASES = [
    # ---- pictures (edge-cer generate --image; the engine folder is never reached) ----
    Case("picture-missing", lambda s: s.generate(image=s.root / "nope.png"), "nope.png", "check the path"),
    Case("picture-is-folder", lambda s: s.generate(image=s.root / "stimuli"), "stimuli", "give a picture file"),
    Case("picture-empty", lambda s: s.generate(image=s.file("empty.png", b"")), "empty.png", "re-copy"),
    Case("picture-text", lambda s: s.generate(image=s.file("text.png", "hello")), "text.png", "re-export it"),
    Case("picture-truncated", lambda s: s.generate(image=s.file("cut.png", png()[:40])), "cut.png", "re-export it"),
    Case("picture-bomb-header", lambda s: s.generate(image=s.file("bomb.png", png_header(30000, 30000))),
         "bomb.png", "megapixel limit"),
    Case("picture-over-limit", lambda s: s.generate(image=s.file("big.png", png_header(8000, 6000))),
         "big.png", "40-megapixel limit"),
    Case("picture-jpeg-garbage", lambda s: s.generate(image=s.file("x.jpg", b"\xff\xd8\xff\xe0garbage")),
         "x.jpg", "re-export it"),
    Case("picture-out-folder-missing", lambda s: s.generate(out=s.root / "no" / "out.png"), "no", "no such folder"),
    Case("noise-not-npy", lambda s: s.generate(extra=("--noise", str(s.file("n.npy", b"junk")))), "n.npy", "numpy.save"),
    Case("export-pickle-adapter", lambda s: ["export", "sd", "--model", str(s.root / "stimuli"), "--ip-adapter",
                                             str(s.file("ip.bin", b"pickle")), "--out", str(s.root / "e")],
         "ip.bin", "safetensors"),
    Case("export-adapter-missing", lambda s: ["export", "sd", "--model", str(s.root / "stimuli"), "--ip-adapter",
                                              str(s.root / "ip.safetensors"), "--out", str(s.root / "e")],
         "--ip-adapter", "give the h94"),
    # ---- prompts ----
    Case("prompt-undecodable-bytes", lambda s: s.generate(prompt="it is \udcff fine"), "--prompt", "UTF-8"),
    Case("negative-prompt-undecodable", lambda s: s.generate(extra=("--negative-prompt", "\udce9")),
         "--negative-prompt", "UTF-8"),
    # ---- engine folders ----
    Case("engines-missing", lambda s: s.generate(engines=s.root / "missing"), "manifest.json", "--engines"),
    Case("engines-is-file", lambda s: s.generate(engines=s.file("engines.txt", "x")), "engines.txt", "--engines"),
    Case("engines-empty-folder", s_("engines", None), "manifest.json", "edge-cer export sd"),
    Case("manifest-not-json", s_("engines", "{oops"), "manifest.json", "re-run"),
    Case("manifest-json-list", s_("engines", [1, 2]), "manifest.json", "re-export"),
    Case("manifest-json-string", s_("engines", '"text"'), "manifest.json", "re-export"),
    Case("manifest-other-format", s_("engines", {"format": "diffusers"}), "manifest.json", "re-export"),
    Case("manifest-lacks-files", s_("engines", {k: v for k, v in manifest().items() if k != "files"}),
         "manifest.json", "re-run"),
    Case("manifest-files-is-list", s_("engines", manifest(files=["a"])), "manifest.json", "re-run"),
    Case("manifest-lacks-graphs", s_("engines", {k: v for k, v in manifest().items() if k != "graphs"}),
         "manifest.json", "re-run"),
    Case("manifest-graph-not-hashed", s_("engines", manifest(files={})), "manifest.json", "re-run"),
    Case("manifest-lacks-dims", s_("engines", manifest(model={})), "manifest.json", "re-run"),
    Case("manifest-not-utf8", s_("engines", b'{"format": "\xff"}'), "manifest.json", "UTF-8"),
    Case("engine-file-missing", s_("engines", manifest()), "model.onnx", "re-run the export"),
    Case("engine-file-modified", s_("engines", manifest(), {"text_encoder/model.onnx": b"changed"}),
         "model.onnx", "re-run the export"),
    Case("engine-graph-junk-rehashed", s_("engines", manifest(), {"text_encoder/model.onnx": b"not onnx"}),
         "model.onnx", "onnxruntime could not open it"),
    # ---- audio (edge-cer transcribe: checked before the recogniser loads) ----
    Case("audio-missing", lambda s: ["transcribe", "--asr", str(s.root / "asr"), str(s.root / "gone.wav")],
         "gone.wav", "check the path"),
    Case("audio-is-folder", lambda s: ["transcribe", "--asr", str(s.root / "asr"), str(s.root / "stimuli")],
         "stimuli", "check the path"),
    Case("audio-not-audio", lambda s: ["transcribe", "--asr", str(s.root / "asr"), str(s.file("a.wav", b"RIFF"))],
         "a.wav", "convert it to WAV"),
    Case("audio-empty", lambda s: ["transcribe", "--asr", str(s.root / "asr"), str(s.file("e.wav", b""))],
         "e.wav", "convert it to WAV"),
    Case("audio-too-long", lambda s: ["transcribe", "--asr", str(s.root / "asr"), str(s.file("l.wav", wav(3601, 8)))],
         "l.wav", "3600 s limit"),
    Case("audio-png", lambda s: ["transcribe", "--asr", str(s.root / "asr"), str(s.root / "stimuli" / "s0.png")],
         "s0.png", "convert it to WAV"),
    Case("audio-and-mic", lambda s: ["transcribe", "--asr", str(s.root / "asr"), "--mic", str(s.file("b.wav", b""))],
         "--mic", "not both"),
    # ---- protocols ----
    Case("protocol-missing", lambda s: s.run(protocol=s.root / "nope.toml"), "--protocol", "give a protocol"),
    Case("protocol-is-folder", lambda s: s.run(protocol=s.root / "stimuli"), "--protocol", "give a protocol"),
    Case("protocol-not-utf8", s_("protocol", b'name = "\xff"\n'), "bad.toml", "UTF-8"),
    Case("protocol-latin1", lambda s: s.run(protocol=s.file("l1.toml", 'name = "café"\n'.encode("latin-1"))),
         "l1.toml", "save it as UTF-8"),
    Case("protocol-binary", lambda s: s.run(protocol=s.file("bin.toml", bytes(range(256)))), "bin.toml", "UTF-8"),
    Case("protocol-bad-toml", s_("protocol", "name = \n"), "bad.toml", "fix the syntax"),
    Case("protocol-time-scale-nan", s_("protocol", protocol_with("time_scale = nan").replace(
        "time_scale = 0.0\n", "", 1)), "time_scale", "finite"),
    Case("protocol-time-scale-inf", s_("protocol", PROTOCOL.replace("time_scale = 0.0", "time_scale = inf")),
         "time_scale", "finite"),
    Case("protocol-time-scale-string", s_("protocol", PROTOCOL.replace("time_scale = 0.0", 'time_scale = "fast"')),
         "time_scale", "e.g. time_scale = 1.0"),
    Case("protocol-time-scale-negative", s_("protocol", PROTOCOL.replace("time_scale = 0.0", "time_scale = -1.0")),
         "time_scale", "use 1 for real sessions"),
    Case("protocol-duration-nan", s_("protocol", protocol_with("stimulus = nan", "durations")), "stimulus", "finite"),
    Case("protocol-duration-negative", s_("protocol", protocol_with("iti = -2", "durations")), "iti", "0 or more"),
    Case("protocol-duration-huge", s_("protocol", protocol_with("iti = 1e12", "durations")), "iti", "under 3600"),
    Case("protocol-duration-bool", s_("protocol", protocol_with("iti = true", "durations")), "iti", "e.g. iti ="),
    Case("protocol-unknown-key", s_("protocol", protocol_with("colour = 1")), "colour", "valid top-level keys"),
    Case("protocol-unknown-section-key", s_("protocol", protocol_with("speed = 1", "durations")), "speed",
         "valid keys"),
    Case("protocol-section-not-table", s_("protocol", protocol_with("durations = 3")), "durations",
         "write it as [durations]"),
    Case("protocol-trials-zero", s_("protocol", PROTOCOL.replace("trials_per_condition = 1", "trials_per_condition = 0")),
         "trials_per_condition", "1 or more"),
    Case("protocol-trials-huge", s_("protocol", PROTOCOL.replace("trials_per_condition = 1",
                                                                   "trials_per_condition = 9999999999")),
         "trials_per_condition", "at most"),
    Case("protocol-trials-float", s_("protocol", PROTOCOL.replace("trials_per_condition = 1",
                                                                    "trials_per_condition = 1.5")),
         "trials_per_condition", "must be int"),
    Case("protocol-practice-negative", s_("protocol", PROTOCOL.replace("practice_trials = 0", "practice_trials = -1")),
         "practice_trials", "0 or more"),
    Case("protocol-strategy-unknown", s_("protocol", protocol_with('strategies = ["ignore"]', "design")),
         "strategies", "use only"),
    Case("protocol-strategies-empty", s_("protocol", protocol_with("strategies = []", "design")), "strategies",
         "at least one"),
    Case("protocol-strategies-repeat", s_("protocol", protocol_with('strategies = ["describe", "describe"]', "design")),
         "strategies", "each level once"),
    Case("protocol-feedback-ai-without-engines", s_("protocol", PROTOCOL.replace('["none"]', '["ai", "none"]')),
         "AI-feedback", "--engines"),
    Case("protocol-selection-unknown", s_("protocol", protocol_with('stimulus_selection = "best"', "design")),
         "stimulus_selection", "most_negative"),
    Case("protocol-rating-inverted", s_("protocol", protocol_with("low = 9\nhigh = 1", "rating")), "high",
         "low = 1, high = 9"),
    Case("protocol-rating-huge", s_("protocol", protocol_with("high = 99999999999999999", "rating")), "[rating]",
         "within"),
    Case("protocol-strength-zero", s_("protocol", protocol_with("strength = 0.0", "generation")), "[generation]",
         "0 < strength"),
    Case("protocol-steps-huge", s_("protocol", protocol_with("steps = 1000000", "generation")), "[generation]",
         "steps <= 1000"),
    Case("protocol-ip-scale-nan", s_("protocol", protocol_with("ip_scale = nan", "generation")), "ip_scale", "finite"),
    Case("protocol-template-no-transcript", s_("protocol", protocol_with('template = "a photo"', "prompt")),
         "template", "{transcript}"),
    Case("protocol-template-braces", s_("protocol", protocol_with('template = "{transcript} {x}"', "prompt")),
         "template", "no other braces"),
    Case("protocol-filler-empty", s_("protocol", protocol_with('fillers = [" "]', "prompt")), "fillers", "words"),
    Case("protocol-words-inverted", s_("protocol", protocol_with("min_words = 9\nmax_words = 2", "prompt")),
         "[prompt]", "min_words <= max_words"),
    Case("protocol-deadline-zero", s_("protocol", protocol_with("deadline_s = 0.0", "live")), "[live]",
         "deadline_s > 0"),
    Case("protocol-on-deadline-unknown", s_("protocol", protocol_with('on_deadline = "wait"', "live")), "on_deadline",
         '"best"'),
    Case("protocol-pause-zero", s_("protocol", protocol_with("vad_min_silence = 0.0", "live")), "vad_min_silence",
         "0.1 to 2.0 seconds"),
    Case("protocol-seed-negative", s_("protocol", protocol_with("seed = -5")), "seed", "whole number"),
    Case("protocol-speaking-zero", s_("protocol", PROTOCOL.replace("time_scale = 0.0", "time_scale = 1.0")
                                      + "[durations]\nspeaking = 0\n"), "speaking", "above 0"),
    # ---- stimuli and norms ----
    Case("stimuli-missing", lambda s: s.run(stimuli=s.root / "nope"), "--stimuli", "give the folder"),
    Case("stimuli-is-file", lambda s: s.run(stimuli=s.root / "protocol.toml"), "--stimuli", "give the folder"),
    Case("norms-missing", lambda s: s.run(stimuli=s.root / "empty-dir"), "norms.csv", "write norms.csv"),
    Case("norms-is-folder", lambda s: s.run("--norms", str(s.root / "stimuli")), "stimuli", "give a UTF-8 norm table"),
    Case("norms-nan", s_("norms", NORMS.replace("2.0,5.0", "nan,5.0")), "line 2", "write the norm mean"),
    Case("norms-inf", s_("norms", NORMS.replace("2.0,5.0", "inf,5.0")), "line 2", "write the norm mean"),
    Case("norms-huge", s_("norms", NORMS.replace("2.0,5.0", "1e999,5.0")), "line 2", "write the norm mean"),
    Case("norms-text", s_("norms", NORMS.replace("2.0,5.0", "low,5.0")), "valence", "write the norm mean"),
    Case("norms-empty-cell", s_("norms", NORMS.replace("2.0,5.0", ",5.0")), "valence", "fill it in"),
    Case("norms-missing-column", s_("norms", "id,file,valence,dominance\ns0,s0.png,2,3\n"), "arousal", "fill it in"),
    Case("norms-no-header", s_("norms", "s0,s0.png,2,5\n"), "norms.csv", "first line must be"),
    Case("norms-empty-file", s_("norms", ""), "norms.csv", "first line must be"),
    Case("norms-only-header", s_("norms", "id,file,valence,arousal\n"), "norms.csv", "add one row per picture"),
    Case("norms-not-utf8", s_("norms", NORMS.encode() + "s9,é.png,2,5\n".encode("latin-1")), "norms.csv", "UTF-8"),
    Case("norms-binary", s_("norms", bytes(range(256)) * 4), "norms.csv", "UTF-8"),
    Case("norms-duplicate-id", s_("norms", NORMS + "s0,s1.png,3,3\n"), "duplicate stimulus id", "its own id"),
    Case("norms-picture-missing", s_("norms", NORMS + "s9,gone.png,3,3\n"), "gone.png", "remove the row"),
    Case("norms-picture-is-folder", s_("norms", NORMS + "s9,sub,3,3\n", {}), "sub", "give a picture file"),
    Case("norms-picture-corrupt", s_("norms", NORMS + "s9,bad.png,3,3\n", {"bad.png": PNG_MAGIC + b"junk"}),
         "bad.png", "re-export it"),
    Case("norms-picture-bomb", s_("norms", NORMS + "s9,bomb.png,3,3\n", {"bomb.png": png_header(20000, 20000)}),
         "bomb.png", "megapixel limit"),
    Case("norms-picture-empty", s_("norms", NORMS + "s9,e.png,3,3\n", {"e.png": b""}), "e.png", "re-copy"),
    Case("norms-too-few", s_("norms", "id,file,valence,arousal\ns0,s0.png,2,5\n"), "needs 2", "add pictures"),
    Case("norms-iaps-nan", s_("norms", "IAPS\tvalmn\taromn\ns0\tnan\t5\n"), "valmn", "write the norm mean"),
    # ---- scripted files ----
    Case("script-missing", lambda s: s.run(script=s.root / "nope.toml"), "--scripted", "give a TOML or JSON"),
    Case("script-is-folder", lambda s: s.run(script=s.root / "stimuli"), "--scripted", "give a TOML or JSON"),
    Case("script-not-utf8", s_("script", b'[[trials]]\ntext = "caf\xe9"\n'), "bad.toml", "UTF-8"),
    Case("script-bad-toml", s_("script", "rt_s = \n"), "bad.toml", "fix the syntax"),
    Case("script-bad-json", s_("script", "{", "bad.json"), "bad.json", "fix the syntax"),
    Case("script-json-list", s_("script", "[1, 2]", "bad.json"), "bad.json", "valid keys"),
    Case("script-rt-string", s_("script", 'rt_s = "fast"\n'), "rt_s", "e.g. 0.8"),
    Case("script-rt-negative", s_("script", "rt_s = -1\n"), "rt_s", "from 0 to"),
    Case("script-rt-bool", s_("script", "rt_s = true\n"), "rt_s", "e.g. 0.8"),
    Case("script-speak-nan-json", s_("script", '{"speak_s": NaN}', "bad.json"), "speak_s", "from 0 to"),
    Case("script-speak-inf", s_("script", "speak_s = inf\n"), "speak_s", "from 0 to"),
    Case("script-pre-string", s_("script", '[ratings]\npre = "seven"\n'), "pre", "whole number"),
    Case("script-pre-float", s_("script", "[ratings]\npre = 7.5\n"), "pre", "whole number"),
    Case("script-pre-huge", s_("script", "[ratings]\npre = 99999999999\n"), "pre", "whole number"),
    Case("script-ai-change-string", s_("script", '[ratings]\nai_change = "-1"\n'), "ai_change", "whole number"),
    Case("script-post-change-unknown", s_("script", "[ratings]\npost_change = { ignore = 1 }\n"), "ignore",
         "valid keys"),
    Case("script-post-change-string", s_("script", '[ratings]\npost_change = { describe = "x" }\n'), "describe",
         "whole number"),
    Case("script-ratings-not-table", s_("script", "ratings = 3\n"), "bad.toml", "valid keys"),
    Case("script-unknown-key", s_("script", "speed = 3\n"), "speed", "valid keys"),
    Case("script-trials-not-list", s_("script", "trials = 3\n"), "trials", "[[trials]]"),
    Case("script-trial-not-table", s_("script", '{"trials": ["hello"]}', "bad.json"), "trials[1]", "valid keys"),
    Case("script-trial-both", s_("script", '[[trials]]\ntext = "a"\nwav = "a.wav"\n'), "trials[1]", "exactly one"),
    Case("script-trial-neither", s_("script", "[[trials]]\npre = 3\n"), "trials[1]", "exactly one"),
    Case("script-trial-text-number", s_("script", "[[trials]]\ntext = 5\n"), "trials[1]", "string in quotes"),
    Case("script-trial-pre-string", s_("script", '[[trials]]\ntext = "a"\npre = "high"\n'), "pre", "whole number"),
    Case("script-trial-lone-surrogate", s_("script", '{"trials": [{"text": "\\ud800"}]}', "bad.json"), "trials[1]",
         "UTF-8"),
    Case("script-wav-missing", s_("script", '[[trials]]\nwav = "gone.wav"\n'), "gone.wav", "check the path"),
    Case("script-wav-is-folder", s_("script", '[[trials]]\nwav = "stimuli"\n'), "stimuli", "check the path"),
    Case("script-wav-not-audio", lambda s: (s.file("noise.wav", b"RIFF junk"),
                                            s.script('[[trials]]\nwav = "noise.wav"\n'))[1], "noise.wav",
         "convert it to WAV"),
    Case("script-wav-too-long", lambda s: (s.file("long.wav", wav(3601, rate=8)),
                                           s.script('[[trials]]\nwav = "long.wav"\n'))[1], "long.wav", "3600 s limit"),
    Case("script-wav-without-asr", lambda s: (s.file("ok.wav", wav(0.5)),
                                              s.script('[[trials]]\nwav = "ok.wav"\n'))[1], "bad.toml", "--asr DIR"),
    # ---- participants, key files, data folders ----
    Case("participant-name", lambda s: s.run(participant="Alice"), "--participant", "never a participant's name"),
    Case("participant-name-with-digit", lambda s: s.run(participant="Alice2"), "--participant", "study code"),
    Case("participant-path", lambda s: s.run(participant="../P1"), "--participant", "letters and digits"),
    Case("participant-empty", lambda s: s.run(participant=""), "--participant", "letters and digits"),
    Case("key-file-is-folder", lambda s: s.run("--key-file", str(s.root / "stimuli")), "--key-file", "is a folder"),
    Case("key-line-torn-mine", lambda s: (s.file("data/participant-keys.tsv", (s.data / "participant-keys.tsv")
                                                 .read_bytes() + b"P002\tab"), s.run())[1], "line 3", "repair it"),
    Case("key-label-twice-mine", lambda s: (s.file("data/participant-keys.tsv", (s.data / "participant-keys.tsv")
                                                   .read_bytes() + b"P002\tabcdefgh\tx\nP002\tbcdefghj\tx\n"),
                                            s.run())[1], "second pseudonym", "repair it"),
    Case("key-line-binary-mine", lambda s: (s.file("data/participant-keys.tsv", (s.data / "participant-keys.tsv")
                                                   .read_bytes() + b"\xff\xfe\x00\x01\n"), s.run())[1], "line 3",
         "repair it"),
    Case("data-is-file", lambda s: s.run()[:4] + [str(s.file("data.txt", "x"))] + s.run()[5:], "--data",
         "writable folder"),
    Case("data-under-file", lambda s: s.run()[:4] + [str(s.file("d.txt", "x") / "data")] + s.run()[5:], "--data",
         "writable folder"),
    Case("data-low-space", lambda s: [a if a != "0" else "1e15" for a in s.run()], "--data", "free some space"),
    Case("resume-unknown", lambda s: s.run("--resume", participant="P003"), "--resume", "without --resume"),
    Case("resume-finished", lambda s: s.run("--resume", participant="P001"), "--resume", "leave out --resume"),
    Case("no-script", lambda s: [a for a in s.run() if a not in ("--scripted", str(s.root / "script.toml"))],
         "--scripted", "edge-cer tui"),
    Case("bids-is-file", lambda s: (shutil.rmtree(s.data / "bids"), s.file("data/bids", "x"), s.run())[2], "bids",
         "move it away"),
    Case("export-data-not-a-data-folder", lambda s: ["export-data", str(s.root / "stimuli")], "stimuli",
         "give the data folder"),
    # ---- analysis inputs ----
    Case("analyze-no-trials", lambda s: ["analyze", str(s.root / "stimuli"), "--out", str(s.root / "o")], "trials.csv",
         "run a session"),
    Case("analyze-empty-csv", s_("trials_csv", ""), "trials.csv", "the header must be"),
    Case("analyze-binary-csv", s_("trials_csv", bytes(range(256)) * 8), "trials.csv", "UTF-8"),
    Case("analyze-missing-columns", s_("trials_csv", "participant,session\nx,1\n"), "trials.csv", "header must be"),
    Case("analyze-out-is-file", lambda s: ["analyze", str(s.data), "--out", str(s.root / "protocol.toml")],
         "--out", "give a folder for"),
]


@pytest.fixture(scope="module")
def base_study(tmp_path_factory) -> Path:
    """protocol, stimuli, script, and a data folder holding one finished session (P001)."""
    root = tmp_path_factory.mktemp("corpus")
    study = Study(root)
    study.file("protocol.toml", PROTOCOL)
    study.file("script.toml", SCRIPT)
    study.file("stimuli/norms.csv", NORMS)
    for i in range(4):
        study.file(f"stimuli/s{i}.png", png())
    (root / "empty-dir").mkdir()
    (root / "stimuli" / "sub").mkdir()
    assert main(study.run(participant="P001")) == 0
    return root


def test_corpus_is_large_and_unique():
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_line(case, base_study, tmp_path, capsys, monkeypatch):
    if case.id.startswith("export-") and not case.id.startswith("export-data"):
        pytest.importorskip("torch", reason="the export stage is not installed")
    monkeypatch.setenv("EDGE_CER_LOG_DIR", str(tmp_path / "logs"))
    study = Study(tmp_path / "study")
    shutil.copytree(base_study, study.root, symlinks=True)
    argv = case.argv(study)
    before = snapshot(study.data)
    capsys.readouterr()
    status = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and "internal error" not in err
    assert case.names in lines[0], lines[0]
    assert case.fix in lines[0], lines[0]
    assert snapshot(study.data) == before, "the study folder changed"
    assert not (tmp_path / "logs").exists(), "a user error is not a bug: no traceback log"
