"""Damaged checkpoints are detected at resume, and a full disk during a save loses nothing.

Checksums are written at save; a checkpoint corrupted or truncated later is set aside and the run
falls back to the one before, saying so. ENOSPC while saving leaves the previous checkpoint intact
and stops with a clear message.
"""
import errno

import torch
from safetensors.torch import load_file

from alignlab import checkpoint, cli
from conftest import sft_overrides

KW = {"training.total_steps": 4, "training.save_every": 2, "training.keep_last": 3, "data.eval": "null"}


def weights(ckpt):  # copies: load_file may map the file, which the test then overwrites
    return {k: v.clone() for k, v in load_file(ckpt / "model.safetensors").items()}


def test_a_corrupted_checkpoint_is_detected_and_the_run_falls_back_to_the_previous_one(tmp_path, qwen_dir, capsys):
    assert cli.main(["sft", "-c", "sft_tiny", *sft_overrides(tmp_path, qwen_dir, "c", **KW)]) == 0
    ckpts = dict(checkpoint.list_checkpoints(tmp_path / "c"))
    assert set(ckpts) == {2, 4} and all(checkpoint.verify(p) is None for p in ckpts.values())
    straight = weights(ckpts[4])
    blob = bytearray((ckpts[4] / "model.safetensors").read_bytes())
    blob[-10] ^= 0xFF  # one flipped byte, same size: only the checksum can tell
    (ckpts[4] / "model.safetensors").write_bytes(bytes(blob))
    assert "does not match its checksum" in checkpoint.verify(ckpts[4])
    capsys.readouterr()
    assert cli.main(["sft", "-c", "sft_tiny", *sft_overrides(tmp_path, qwen_dir, "c", **KW)]) == 0
    err = capsys.readouterr().err
    assert "step_4 is damaged: model.safetensors does not match its checksum" in " ".join(err.split())
    assert "falling back to step_2" in err
    assert (tmp_path / "c/checkpoints/.corrupt-step_4").is_dir()
    again = weights(tmp_path / "c/checkpoints/step_4")  # steps 3-4 redone from step 2: exactly as before
    assert all(torch.equal(straight[k], again[k]) for k in straight)


def test_a_truncated_checkpoint_is_detected(tmp_path, qwen_dir):
    assert cli.main(["sft", "-c", "sft_tiny", *sft_overrides(tmp_path, qwen_dir, "t", **KW)]) == 0
    state = tmp_path / "t/checkpoints/step_4" / checkpoint.STATE_FILE
    state.write_bytes(state.read_bytes()[:100])
    assert "truncated" in checkpoint.verify(state.parent)
    assert checkpoint.find_resume(tmp_path / "t", "auto").name == "step_2"


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint_and_says_so(tmp_path, qwen_dir, monkeypatch, capsys):
    real = checkpoint.save_model

    def full_disk(model, tok, out):
        if out.name.startswith(".tmp-step_4"):
            real(model, tok, out)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(model, tok, out)

    monkeypatch.setattr(checkpoint, "save_model", full_disk)
    assert cli.main(["sft", "-c", "sft_tiny", *sft_overrides(tmp_path, qwen_dir, "f", **KW)]) == 3
    err = " ".join(capsys.readouterr().err.split())
    assert "no space left on the device while writing checkpoint" in err and "step_2 is intact" in err
    root = tmp_path / "f/checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_2"]  # no half-written temporary left
    assert checkpoint.verify(root / "step_2") is None
    monkeypatch.setattr(checkpoint, "save_model", real)  # space freed: the same command finishes from step 2
    assert cli.main(["sft", "-c", "sft_tiny", *sft_overrides(tmp_path, qwen_dir, "f", **KW)]) == 0
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path / "f")] == [2, 4]
