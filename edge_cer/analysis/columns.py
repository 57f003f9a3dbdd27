"""Reading and writing `<DATA_DIR>/trials.csv`: one row per trial, `TRIAL_COLUMNS` in order; an empty cell is missing.

The session engine (edge_cer.session.data) defines the columns and writes the file; `analyze` and `simulate` read
and write it through this module only.
rating_* are negative affect on 1-9 (higher = more negative): rating_pre after viewing the stimulus, before
regulating; rating_post after regulation and feedback.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from edge_cer.errors import EdgeCerError, read_user_text
from edge_cer.session.data import TIDY_COLUMNS, TIDY_FILE, TRIAL_STATUSES
from edge_cer.session.protocol import FEEDBACK, STRATEGIES

# The session engine owns the tidy format; this module adds how the analysis reads it.
TRIALS_FILE = TIDY_FILE
TRIAL_COLUMNS: tuple[str, ...] = TIDY_COLUMNS

# Everything else is read as a number; identifiers stay strings so "007" is not participant 7.
TEXT_COLUMNS = ("participant", "session", "strategy", "feedback", "stimulus_id", "transcript", "picture_file",
                "picture_sha256", "engine_manifest_sha256", "status", "transcript_source", "feedback_source",
                "no_picture_reason", "prompt", "negative_prompt", "scheduler", "vae", "engine", "provider",
                "safety_reason")  # fmt: skip
# Added with session schema 3 (what was shown, provenance, feedback timing): missing in older files, read as empty;
# picture_shown is then derived (below).
RECORD_COLUMNS = TRIAL_COLUMNS[TRIAL_COLUMNS.index("picture_shown"):]
# Whole numbers: written without ".0" (pandas reads them as float when a cell is empty), so R and pandas read
# the seed 1779369991 as written.
INTEGER_COLUMNS = ("block", "trial", "practice", "rating_pre", "rating_post", "seed", "steps", "picture_shown")
# R's write.csv writes a missing value as NA; a transcript "NA" is text someone said.
MISSING = ("", "NA")
ALLOWED = {"strategy": STRATEGIES, "feedback": FEEDBACK, "status": TRIAL_STATUSES, "practice": (0, 1),
           "picture_shown": (0, 1)}


def read_trials(data_dir: str | Path) -> pd.DataFrame:
    """Reads and validates `<data_dir>/trials.csv`; raises EdgeCerError naming the file and the fix."""
    path = Path(data_dir) / TRIALS_FILE
    if not path.is_file():
        raise EdgeCerError(f"{path}: not found; run a session into {data_dir} or `edge-cer simulate --out {data_dir}`")
    text = read_user_text(path, "", "the trials.csv that `edge-cer export-data` writes")
    header = text.partition("\n")[0].strip().split(",") if text.strip() else []
    missing = [c for c in TRIAL_COLUMNS if c not in header and c not in RECORD_COLUMNS]
    if missing:
        raise EdgeCerError(f"{path}: missing column(s) {', '.join(missing)}; the header must be: {','.join(TRIAL_COLUMNS)}")
    columns = [c for c in TRIAL_COLUMNS if c in header]
    try:
        trials = pd.read_csv(io.StringIO(text), dtype={c: "string" for c in TEXT_COLUMNS}, keep_default_na=False,
                             na_values={c: [""] if c == "transcript" else list(MISSING) for c in columns})
    except (pd.errors.ParserError, ValueError) as exc:
        raise EdgeCerError(f"{path}: not a readable CSV ({' '.join(str(exc).split())}); rebuild it with "
                           f"`edge-cer export-data {data_dir}`") from exc
    trials = trials.reindex(columns=list(dict.fromkeys([*trials.columns, *TRIAL_COLUMNS])))
    for column in TRIAL_COLUMNS:
        if column in TEXT_COLUMNS:
            continue
        numbers = pd.to_numeric(trials[column], errors="coerce")
        bad = trials[column].notna() & numbers.isna()
        if bad.any():
            row = int(bad.idxmax()) + 2  # header is line 1
            raise EdgeCerError(f"{path}: line {row}, column {column}: {trials.at[bad.idxmax(), column]!r} is not a number")
        trials[column] = numbers
    ai = trials["feedback"].eq("ai").fillna(False).astype(bool)
    if "picture_shown" not in header:  # older data: a picture was shown when its onset was logged
        trials["picture_shown"] = trials["picture_shown_s"].notna().astype(float).where(ai)
    for column in (c for c in RECORD_COLUMNS if c in TEXT_COLUMNS and c not in header):
        trials[column] = pd.Series(pd.NA, index=trials.index, dtype="string")
    for column, allowed in ALLOWED.items():
        bad = trials[column].notna() & ~trials[column].isin(allowed)
        if bad.any():
            row = int(bad.idxmax()) + 2
            raise EdgeCerError(f"{path}: line {row}, column {column}: {trials.at[bad.idxmax(), column]!r} is not one of {allowed}")
    return trials[list(TRIAL_COLUMNS)]


def write_trials(trials: pd.DataFrame, data_dir: str | Path) -> Path:
    """Writes the columns in contract order; NaN becomes an empty cell."""
    path = Path(data_dir) / TRIALS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(trials.reindex(columns=list(TRIAL_COLUMNS)), path)
    return path


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """A trial table as CSV: INTEGER_COLUMNS without ".0" (when every value is whole), NaN as an empty cell."""
    table = table.copy()
    for column in INTEGER_COLUMNS:
        if column in table and pd.api.types.is_float_dtype(table[column]):
            values = table[column]
            if (values.dropna() % 1 == 0).all():
                table[column] = values.astype("Int64")
    table.to_csv(path, index=False, na_rep="")
