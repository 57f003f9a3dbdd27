"""The methods paragraph: design, timings, sample, exclusions and models, written from the protocol and the
results, to paste into a paper (and check against it: every number comes from the data or the protocol)."""

from __future__ import annotations

from edge_cer.session.protocol import Protocol

FEEDBACK_WORDS = {"ai": "a picture generated from the spoken text", "none": "a blank screen of equal duration"}


def paragraph(protocol: Protocol, source: str, results: dict) -> str:
    d, r, g, lv = protocol.design, protocol.rating, protocol.generation, protocol.live
    def s(phase: str) -> float:  # the protocol's durations; time_scale only speeds up scripted test runs
        return getattr(protocol.durations, phase)

    design = results["design_conditions"]
    strategies = sorted({c.split("/")[0] for c in design}, key=["reappraise", "describe", "look"].index)
    feedback = sorted({c.split("/")[1] for c in design}, key=["ai", "none"].index)
    instructions = {k: getattr(protocol.instructions, k).split(": ", 1)[-1].rstrip(".") for k in strategies}
    text = [
        f"{results['n_participants']} participants contributed {results['n_trials']} analysed trials "
        f"({results['n_complete_participants']} with every condition). The design crossed regulation strategy ("
        + "; ".join(f"{k}: {instructions[k]}" for k in strategies) + ") with feedback ("
        + "; ".join(f"{k}: {FEEDBACK_WORDS[k]}" for k in feedback) + f") within participants, {d.trials_per_condition} trials per "
        f"condition in one block per condition, after {d.practice_trials} practice trials"
        + (", plus a look/none baseline block analysed descriptively" if d.look_baseline else "") + ". "
        "Block order followed a balanced Latin square (Williams design) over participant numbers, and stimulus "
        "groups matched on normative valence and arousal rotated across conditions.",
        f"Each trial showed a fixation cross ({s('fixation'):g} s), the picture ({s('stimulus'):g} s), a rating "
        f"of negative affect (\"{r.pre_prompt}\", {r.low} = {r.low_label} to {r.high} = {r.high_label}, "
        f"up to {s('rating'):g} s), the strategy cue ({s('cue'):g} s), spoken regulation (up to "
        f"{s('speaking'):g} s, ended by the recogniser's endpoint), feedback ({s('feedback'):g} s), the second "
        f"rating (\"{r.post_prompt}\") and an inter-trial interval ({s('iti'):g} s). Feedback pictures were made "
        f"with Stable Diffusion img2img (strength {g.strength:g}) and an IP-Adapter (scale {g.ip_scale:g}) from "
        f"the stimulus and the transcript, {g.steps} denoising steps"
        + (", decoded with a tiny VAE (TAESD)" if getattr(g, "vae", "full") == "tiny" else "")
        + f", due {lv.deadline_s:g} s after the end of speech.",
        exclusions_sentence(results),
        models_sentence(results),
    ]
    if protocol.time_scale != 1:
        text.append(f"[The sessions ran with time_scale = {protocol.time_scale:g}: participants did not see these "
                    "durations; a scripted or test run.]")
    if "shipped default" in source:
        text.append("[Timings are those of the shipped default protocol: no protocol was stored with the data.]")
    return " ".join(t for t in text if t)


def exclusions_sentence(results: dict) -> str:
    left = [e for e in results["exclusions"] if e["left_out"] and e["trials"] and e["reason"] != "practice trial"]
    ai = results["ai_feedback"]
    text = ("Relief was the pre- minus the post-regulation rating. "
            + ("Left out: " + "; ".join(f"{e['trials']} trials ({e['reason']})" for e in left) + ". " if left else
               "No main trial was left out. "))
    if ai["ai_trials"]:
        share = ai["without_picture"] / ai["ai_trials"]
        text += (f"{ai['without_picture']} of {ai['ai_trials']} AI-feedback trials ({share:.0%}) showed no picture; "
                 + ("they were analysed as assigned (intention to treat)." if ai["intention_to_treat"] else
                    "they were left out, so AI feedback means a picture was shown (the report gives the "
                    "intention-to-treat result beside it)."))
    return text


def models_sentence(results: dict) -> str:
    model = results["mixed_model"]
    if "skipped" in model:
        return f"The mixed model was not fitted ({model['skipped']})."
    text = (f"Relief was modelled trial by trial with a linear mixed model (statsmodels MixedLM, REML; "
            f"{model['formula']}) with {model['coding']}; random effects: {model['random_effects']}. ")
    if model["fallback"]:
        text += fallback_sentence(model) + " "
    text += (f"95% confidence intervals use the t distribution with {model['n_participants'] - 1} degrees "
             "of freedom (participants minus one). Effect sizes are Cohen's dz of the same contrasts from "
             "participant cell means, with 95% CIs by inverting the noncentral t distribution. A repeated-measures "
             "ANOVA on participant cell means (partial eta squared, Greenhouse-Geisser correction) and paired "
             "t-tests with Holm correction are reported alongside. Text valence was scored with VADER "
             "(AFINN as a robustness check) and its agreement with the picture's valence related to relief in a "
             "mixed model of the AI-feedback trials.")
    return text


def fallback_sentence(model: dict) -> str:
    """One sentence: the planned random effects, what was dropped and why in plain words, and what it means."""
    steps = "; then ".join(
        f"{' and '.join(step['dropped'])} was dropped because "
        + ("its variance was estimated at zero" if step["zero_variance"] else
           f"the fit did not converge cleanly ({plain_reason(step['reason'])})") for step in model["fallback"])
    return (f"The planned random effects ({model['planned']}) were simplified: {steps} (Bates et al. 2015); the fixed "
            "effects estimate the same contrasts.")


def plain_reason(reason: str) -> str:
    if "Hessian" in reason or "singular" in reason.lower():
        return "a variance was estimated at or near zero, so its standard errors could not be trusted"
    if "optimization failed" in reason or "not converged" in reason:
        return "the optimiser did not converge"
    return reason
