"""The safety gate's scores on an engine: picture minus stimulus, over the synthetic stimuli, and block rates.

    .venv/bin/python perf/gate_calibration.py demo-out/engines/tiny-sd15-base [--prompts 2 --seeds 3]

Writes nothing; prints percentiles of the CLIP (or proxy) valence drop, the red-share increase and the highest
blocked-concept probability, then the share of pictures blocked at the default and at the demo's thresholds
(docs/wiring.md#the-safety-gate).
"""

from __future__ import annotations

import argparse
import io
import itertools

import numpy as np
from PIL import Image

from edge_cer.headless import DEMO_PROTOCOL
from edge_cer.runtime import build_runtime
from edge_cer.session.participant import ScriptedParticipant
from edge_cer.session.prompt import PromptBuilder
from edge_cer.session.protocol import load_protocol, parse_protocol
from edge_cer.session.stimuli import synthetic_stimuli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("engines")
    parser.add_argument("--prompts", type=int, default=2, help="demo script reappraisals used")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    protocol = load_protocol()
    runtime = build_runtime(protocol, engines=args.engines)
    scorer, g = runtime.live.scorer, protocol.generation
    prompts = [PromptBuilder(protocol.prompt)(u.text) for u in ScriptedParticipant.from_file().utterances]
    rows = []
    for stimulus in synthetic_stimuli().stimuli:
        with Image.open(stimulus.path) as image:
            before, _ = scorer(image)
        for prompt, seed in itertools.product(prompts[:args.prompts], range(args.seeds)):
            picture = runtime.generator.generate(stimulus.path, prompt, seed=seed, strength=g.strength,
                                                 ip_scale=g.ip_scale, steps=g.steps)
            with Image.open(io.BytesIO(picture.png)) as image:
                after, concepts = scorer(image)
            rows.append((after.valence - before.valence, after.red_share - before.red_share,
                         max((concepts[c] for c in scorer.concepts), default=0.0) if concepts else 0.0))
    scores = np.array(rows)
    print(f"{len(rows)} pictures ({after.valence_source} valence)")
    for i, name in enumerate(("valence change", "red share change", "max blocked concept")):
        q = np.percentile(scores[:, i], [0, 10, 50, 90, 100])
        print(f"{name:<20} " + " ".join(f"{v:+.3f}" for v in q) + "   (min p10 p50 p90 max)")
    for label, safety in (("default", protocol.safety), ("demo", parse_protocol(DEMO_PROTOCOL).safety)):
        blocked = ((scores[:, 0] < -safety.max_valence_drop) | (scores[:, 1] > safety.max_red_share_increase)
                   | (scores[:, 2] >= safety.concept_threshold))
        print(f"{label} thresholds: {int(blocked.sum())} of {len(rows)} blocked ({blocked.mean():.1%})")


if __name__ == "__main__":
    main()
