"""benchmarks/kd_run.py's summary over seeds, on unit records made here: each
seed's folder and settings key, the means, the paired KD gains and the
"KD ahead" verdicts (mean and seed by seed), and the markdown table."""

import json

import pytest

from benchmarks import kd_run


def unit(who, stage, value, params=1000):
    if stage == "pretrain":
        return {"arch": "ffn", "hidden": 8, "params": params, "updates": 10,
                "pretrain": {"valid_bits": value, "test_bits": value + 0.1},
                "seconds": 1.0, "command": f"train {who}", "checkpoint": f"/x/{who}.pt"}
    return {"finetune": {"metric": "accuracy", "value": value, "scores": {}, "updates": 3},
            "seconds": 2.0, "command": f"glue {who}", "glue_out": f"/x/glue-{who}"}


def done_for(teacher, plain, kd):
    """{unit: record} of one seed: (valid bits, dev accuracy) per model."""
    done = {}
    for who, (bits, acc) in (("teacher", teacher), ("student_plain", plain),
                             ("student_kd", kd)):
        done[f"{who}_pretrain"] = unit(who, "pretrain", bits)
        done[f"{who}_finetune"] = unit(who, "finetune", acc)
    return done


def test_seed_folders_and_keys(tmp_path):
    args = kd_run.parse_args(["--out", str(tmp_path / "kd"), "--seed", "2", "--seeds", "1,2"])
    assert args.out == str(tmp_path / "kd-s2") and args.seeds == [1, 2]
    one = kd_run.for_seed(args, 1)
    assert one.out == str(tmp_path / "kd") and one.seed == 1
    assert kd_run.settings_key(one) != kd_run.settings_key(args)
    assert kd_run.settings_key(kd_run.for_seed(args, 2)) == kd_run.settings_key(args)
    with pytest.raises(SystemExit):
        kd_run.parse_args(["--seeds", "1,x"])


def test_summary_means_gains_and_verdicts(tmp_path):
    args = kd_run.parse_args(["--out", str(tmp_path / "kd"), "--seeds", "1,2"])
    by_seed = {1: done_for((5.0, 80.0), (6.0, 70.0), (5.5, 74.0)),
               # seed 2: KD behind at fine-tuning, still ahead at pre-training
               2: done_for((5.2, 82.0), (6.2, 72.0), (6.0, 71.0))}
    res = kd_run.summary(args, by_seed, {"command": "python benchmarks/kd_run.py",
                                          "date": "2026-12-06"})
    run = res["kd_run"]
    assert run["seeds"] == [1, 2] and run["complete"] is True
    assert res["student_plain"]["pretrain"]["valid_bits"] == pytest.approx(6.1)
    assert res["student_kd"]["pretrain"]["test_bits"] == pytest.approx(5.85)
    assert res["student_kd"]["finetune"]["value"] == pytest.approx(72.5)
    assert res["teacher"]["finetune"]["metric"] == "accuracy"
    assert set(res["teacher"]["by_seed"]) == {"1", "2"}
    gain = run["kd_gain"]
    assert gain["pretrain"]["by_seed"] == {"1": pytest.approx(0.5), "2": pytest.approx(0.2)}
    assert gain["finetune"]["by_seed"] == {"1": pytest.approx(4.0), "2": pytest.approx(-1.0)}
    assert gain["finetune"]["mean"] == pytest.approx(1.5)
    assert gain["finetune"]["min"] == pytest.approx(-1.0)
    assert run["kd_ahead"] == {"pretrain": True, "finetune": True}
    assert run["kd_ahead_by_seed"] == {"1": {"pretrain": True, "finetune": True},
                                       "2": {"pretrain": True, "finetune": False}}
    json.dumps(res)  # what write_json stores
    text = kd_run.markdown(res)
    assert "| student, KD at both stages | 2 |" in text
    assert "| **student, no KD** | mean |" in text
    assert "seed 2: -1.000" in text and "finetune yes" in text


def test_summary_of_an_unfinished_seed(tmp_path):
    args = kd_run.parse_args(["--out", str(tmp_path / "kd"), "--seeds", "1,2"])
    partial = done_for((5.0, 80.0), (6.0, 70.0), (5.5, 74.0))
    del partial["student_kd_finetune"]
    res = kd_run.summary(args, {1: done_for((5.0, 80.0), (6.0, 70.0), (5.5, 74.0)),
                                2: partial}, {"command": "c", "date": "d"})
    run = res["kd_run"]
    assert run["complete"] is False and run["complete_by_seed"] == {"1": True, "2": False}
    # fine-tuning compares only the seeds where both students finished
    assert run["kd_gain"]["finetune"]["by_seed"] == {"1": pytest.approx(4.0)}
    assert res["student_kd"]["finetune"]["seeds"] == [1]
    assert "not every unit has run" in kd_run.markdown(res)
