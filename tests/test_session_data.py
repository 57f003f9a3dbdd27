"""Data safety at the edges: participant labels, pseudonyms in file names, unwritable or full disks, the CLI."""

from __future__ import annotations

import errno
import os

import pytest

from edge_cer.cli import main
from edge_cer.errors import EdgeCerError
from edge_cer.session import data
from edge_cer.session.data import check_label, check_writable
from edge_cer.session.opening import open_session
from edge_cer.session.ownership import read_keys
from edge_cer.session.stimuli import synthetic_stimuli
from tests.session_helpers import make_protocol, protocol_text


@pytest.mark.parametrize("label", ["P017", "017", "s12", "sub-03"])
def test_good_labels(label):
    assert check_label(label) == label


@pytest.mark.parametrize(
    "label, message",
    [("Anna", "looks like a name"), ("john.smith", "no spaces or path characters"), ("../P01", "path characters"),
     ("P 01", "no spaces"), ("Maria42", "looks like a name"), ("", "short code")],
)
def test_name_like_or_path_labels_are_refused(label, message):
    with pytest.raises(EdgeCerError, match=message):
        check_label(label)


def test_no_identifier_in_any_file_name(tmp_path):
    stimuli = synthetic_stimuli(tmp_path / "stimuli")
    key_file = tmp_path / "elsewhere" / "keys.tsv"
    _, _, store = open_session("P942", tmp_path / "data", protocol=make_protocol(), stimuli=stimuli,
                               key_file=key_file, min_free_bytes=0)
    store.close()
    names = [p.name for p in (tmp_path / "data").rglob("*")]
    assert names and not any("942" in n for n in names)
    assert read_keys(key_file) == {"P942": store.meta["participant"]}
    assert not (tmp_path / "data" / data.KEY_FILE).exists(), "--key-file keeps the key out of the data folder"
    assert "P942" not in (store.folder / data.DB_FILE).read_bytes().decode(errors="replace")
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"


def test_full_disk_is_refused_before_the_first_trial(tmp_path):
    with pytest.raises(EdgeCerError, match=r"MB free, the session needs .* free some space"):
        check_writable(tmp_path, min_free_bytes=10**18)


def test_unwritable_folder_is_refused_before_the_first_trial(tmp_path, monkeypatch):
    # Tests run as root here, for whom chmod does not stop writes; a read-only mount answers every write with EROFS.
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "fsync", read_only)
    with pytest.raises(EdgeCerError, match="cannot write there \\(Read-only file system\\)"):
        check_writable(tmp_path / "data", min_free_bytes=0)
    monkeypatch.undo()
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(EdgeCerError, match="cannot write there"):
        check_writable(blocked / "data", min_free_bytes=0)


def test_cli_run_refusals_and_a_run(tmp_path, capsys):
    script = tmp_path / "script.toml"
    script.write_text('[[trials]]\ntext = "Only a picture."\n')
    none_protocol = tmp_path / "none.toml"
    none_protocol.write_text(protocol_text(feedback='["none"]', trials_per_condition=1))
    base = ["run", "--participant", "P005", "--data", str(tmp_path / "data"), "--scripted", str(script)]
    assert main(base) == 2
    assert "has AI-feedback conditions, which need the picture engine" in capsys.readouterr().err
    assert not (tmp_path / "data" / "sessions").exists(), "refused before any session folder exists"
    assert main(base + ["--protocol", str(none_protocol)]) == 0
    assert "trial 2 recorded" in capsys.readouterr().out
    assert main(base + ["--resume"]) == 2
    assert "resuming a finished session is refused" in capsys.readouterr().err
    assert main(base[:-2] + ["--protocol", str(none_protocol)]) == 2
    assert "--scripted FILE is required" in capsys.readouterr().err
    assert main(base + ["--protocol", str(none_protocol), "--engines", str(tmp_path / "missing")]) == 2
    assert "--engines" in capsys.readouterr().err
