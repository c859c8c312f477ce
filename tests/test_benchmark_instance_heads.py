"""benchmarks/instance_heads.py's bookkeeping on fake run folders: which runs are reused (only
those of this code), the record (one table per step count, rows of one committed code), and the
results page's block generated from it, with hand-computed differences."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import instance_heads as ih
from tests.helpers import ROOT

CODE = {"code_hash": "c0de" * 16, "commit": "439dd03" + "0" * 33, "dirty": False}
OTHER = {"code_hash": "0ther" * 12 + "beef", "commit": "1234567" + "0" * 33, "dirty": False}
MACHINE = {"platform": "Linux-6.8-x86_64-with-glibc2.39", "processor": "x86_64", "cpus": 2, "python": "3.12.3",
           "torch": "2.11.0", "minkowskiengine": "0.5.4", "device": "cpu", "gpu": None}  # a record before "cpu"


# ------------------------------------------------------------------------------- runs and scores
@pytest.fixture
def fake_training(monkeypatch):
    """finetune.run replaced by one that writes what a finished run leaves; returns its calls."""
    calls = []

    def run(cfg, resume=False):
        out = Path(cfg["output_dir"])
        calls.append((out.name, resume, cfg["train"]["max_steps"]))
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        (out / "checkpoints" / "last.pt").write_bytes(b"weights")
        (out / "metrics.json").write_text(json.dumps({"step": cfg["train"]["max_steps"]}))

    monkeypatch.setattr(ih.finetune, "run", run)
    return calls


def finished(out: Path, row: str, code: dict | None, steps: int = 600) -> Path:
    run_dir = out / row
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"old weights")
    (run_dir / "metrics.json").write_text(json.dumps({"step": steps}))
    if code is not None:
        (run_dir / "code.json").write_text(json.dumps(code))
    return run_dir


def test_a_new_run_trains_and_records_its_code(tmp_path, fake_training):
    assert ih.train("asis", tmp_path / "data", tmp_path, 600, "cpu", CODE) == tmp_path / "asis"
    assert fake_training == [("asis", False, 600)]
    assert json.loads((tmp_path / "asis" / "code.json").read_text()) == CODE


def test_a_run_of_this_code_is_reused_an_interrupted_one_resumes(tmp_path, fake_training, capsys):
    finished(tmp_path, "asis", CODE)
    interrupted = tmp_path / "asis_vanilla"
    (interrupted / "checkpoints").mkdir(parents=True)
    (interrupted / "checkpoints" / "last.pt").write_bytes(b"step 300")
    (interrupted / "code.json").write_text(json.dumps(CODE))
    ih.train("asis", tmp_path, tmp_path, 600, "cpu", CODE)
    ih.train("asis_vanilla", tmp_path, tmp_path, 600, "cpu", CODE)
    assert fake_training == [("asis_vanilla", True, 600)]
    assert (tmp_path / "asis" / "checkpoints" / "last.pt").read_bytes() == b"old weights"
    assert capsys.readouterr().out.splitlines()[0] == f"asis: reusing {tmp_path / 'asis'}"


@pytest.mark.parametrize("made_by, stale_folder, why", [
    (OTHER, OTHER["code_hash"][:12], "made by code 0ther0ther0t (commit 1234567)"),
    (None, "unrecorded", "its code is not recorded"),
])
def test_a_run_of_other_code_is_set_aside_and_trained_again(tmp_path, fake_training, capsys, made_by,
                                                             stale_folder, why):
    finished(tmp_path, "mpnet", made_by)
    ih.train("mpnet", tmp_path, tmp_path, 600, "cpu", CODE)
    moved = tmp_path / "stale" / stale_folder / "mpnet"
    assert (moved / "checkpoints" / "last.pt").read_bytes() == b"old weights"
    assert fake_training == [("mpnet", False, 600)]  # from the start, not resumed from the old checkpoint
    assert json.loads((tmp_path / "mpnet" / "code.json").read_text()) == CODE
    assert capsys.readouterr().out.splitlines()[0] == (
        f"rerun mpnet: {why}, this is code c0dec0dec0de (commit 439dd03) (the old run is in {moved})")


def test_a_finished_run_of_other_steps_is_refused(tmp_path, fake_training):
    finished(tmp_path, "asis", CODE, steps=300)
    with pytest.raises(ih.BenchError) as exc:
        ih.train("asis", tmp_path, tmp_path, 600, "cpu", CODE)
    assert str(exc.value) == (f"{tmp_path / 'asis'}: a finished run of 300 steps, the benchmark asks 600; "
                              "choose another --out or delete the folder to rerun it")
    assert fake_training == []


def test_a_score_is_reused_only_if_this_code_made_it_after_the_last_checkpoint(tmp_path):
    run_dir = finished(tmp_path, "asis", CODE)
    score = run_dir / "benchmark.json"
    assert ih.scored(run_dir, CODE) is None  # none yet
    score.write_text(json.dumps({"pq": 0.5, "code_hash": CODE["code_hash"]}))
    assert ih.scored(run_dir, CODE) == {"pq": 0.5, "code_hash": CODE["code_hash"]}
    assert ih.scored(run_dir, OTHER) is None
    last = run_dir / "checkpoints" / "last.pt"
    os.utime(last, (score.stat().st_mtime + 10, score.stat().st_mtime + 10))  # trained on after the score
    assert ih.scored(run_dir, CODE) is None


# ------------------------------------------------------------------------------------ the record
def scores(ap: float, pq: float, miou: float, purity: float = float("nan"), code: dict = CODE) -> dict:
    return {"ap": ap, "ap50": ap + 0.125, "ap25": ap + 0.25, "pq": pq, "mcov": 0.25, "mwcov": 0.5, "mprec": 0.5,
            "mrec": 0.25, "miou": miou, "network_ms": 1234.4, "cluster_ms": 56.6, "fusion_purity": purity,
            "asa": float("nan"), "code_hash": code["code_hash"]}


def fake_table(steps: int = 600, code: dict = CODE) -> dict:
    results = {"asis": scores(0.25, 0.375, 0.5, purity=0.875, code=code),
               "asis_vanilla": scores(0.125, 0.5, 0.625, purity=0.75, code=code),
               "mpnet_nomem": scores(0.125, 0.5, 0.625, purity=0.75, code=code)}
    return ih.table_document(steps, results, {"mpnet_nomem": "asis_vanilla"}, code, MACHINE, 1500.0)


def test_table_document_rows_configs_twins_and_nan_as_null():
    table = fake_table()
    assert (table["steps"], table["code"], table["machine"], table["elapsed_s"]) == (600, CODE, MACHINE, 1500.0)
    asis = table["rows"]["asis"]
    assert asis["name"] == "ASIS" and asis["config"] == "configs/finetune/synthetic_minkunet14a_asis.yaml"
    assert asis["same_as"] is None and asis["asa"] is None and asis["fusion_purity"] == 0.875
    assert table["rows"]["mpnet_nomem"]["same_as"] == "asis_vanilla"
    assert "NaN" not in json.dumps(table)


def test_record_problem_names_what_keeps_a_table_out():
    assert ih.record_problem(fake_table()) is None
    assert ih.record_problem(fake_table(code={**CODE, "dirty": True})) == \
        "the code differs from commit 439dd03 (dirty): commit it and rerun"
    assert ih.record_problem(fake_table(code={**CODE, "commit": None, "dirty": None})) == \
        "no git commit names the code"
    table = fake_table()
    table["rows"]["asis"]["code_hash"] = OTHER["code_hash"]
    assert ih.record_problem(table) == "rows made by other code: asis"


def test_merge_table_joins_rows_of_one_code_and_replaces_other_code():
    first = fake_table()
    later = ih.table_document(600, {"asis_warmup": scores(0.25, 0.5, 0.5625)}, {}, CODE, MACHINE, 900.0)
    merged = ih.merge_table(ih.merge_table({}, first), later)
    [table] = merged["tables"]
    assert list(table["rows"]) == ["asis", "asis_vanilla", "mpnet_nomem", "asis_warmup"]
    assert table["elapsed_s"] == 2400.0
    longer = fake_table(steps=1800)
    merged = ih.merge_table(ih.merge_table(merged, longer), fake_table(steps=300))
    assert [t["steps"] for t in merged["tables"]] == [300, 600, 1800]
    other = ih.table_document(600, {"asis": scores(0.5, 0.5, 0.5, code=OTHER)}, {}, OTHER, MACHINE, 60.0)
    replaced = ih.merge_table(merged, other)
    assert replaced["tables"][1] == other  # other code: the whole 600-step table is replaced


EXPECTED_BLOCK = """\
<!-- generated by `python benchmarks/instance_heads.py --render-readme` from benchmarks/results/instance_heads.json: do not edit -->

600 steps per row, held-out sequence 04:

| method | config | AP | AP50 | AP25 | PQ | mCov | mWCov | mPrec | mRec | mIoU | IF pur | ASA | net ms | clust ms |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
| ASIS | `synthetic_minkunet14a_asis.yaml` | 25.0 | 37.5 | 50.0 | 37.5 | 25.0 | 50.0 | 50.0 | 25.0 | 50.0 | 87.5 | - | 1234 | 57 |
| ASIS vanilla | `synthetic_minkunet14a_asis_vanilla.yaml` | 12.5 | 25.0 | 37.5 | 50.0 | 25.0 | 50.0 | 50.0 | 25.0 | 62.5 | 75.0 | - | 1234 | 57 |
| MPNet no mem | `synthetic_minkunet14a_mpnet_nomem.yaml` (the run of asis_vanilla) | 12.5 | 25.0 | 37.5 | 50.0 | 25.0 | 50.0 | 50.0 | 25.0 | 62.5 | 75.0 | - | 1234 | 57 |

- ASIS - ASIS vanilla: AP +12.5, AP50 +12.5, PQ -12.5, mWCov +0.0, mIoU -12.5 (ASIS (SA + IF) against vanilla, its Table 3)

Measured at commit `439dd03` (code hash `c0dec0dec0de`): Linux-6.8-x86_64-with-glibc2.39, 2 CPUs, Python 3.12.3, torch 2.11.0, MinkowskiEngine 0.5.4, device cpu; 25 min of invocations in all."""  # noqa: E501  (the generated page, verbatim)


def test_render_markdown_from_a_record():
    assert ih.render_markdown(ih.merge_table({}, fake_table())) == EXPECTED_BLOCK.split("\n")


def test_rows_scored_on_other_cpus_are_named():
    """Every row on the table's CPU: no line; rows of two CPUs, or unrecorded: one line naming them."""
    xeon, epyc = "Xeon (family 6 model 207, avx512), OpenBLAS SKYLAKEX", "EPYC (family 25 model 1, avx2), OpenBLAS ZEN"
    table = fake_table()
    table["machine"] = {**MACHINE, "cpu": xeon}
    for r in table["rows"].values():
        r["cpu"] = xeon
    assert ih.cpu_lines(table) == []
    table["rows"]["asis_vanilla"]["cpu"] = epyc
    table["rows"]["mpnet_nomem"]["cpu"] = None
    assert ih.cpu_lines(table) == ["", f"Rows by the CPU of the invocation that scored them: {xeon}: ASIS; "
                                       f"{epyc}: ASIS vanilla; not recorded: MPNet no mem."]
    assert ih.render_markdown({"tables": [table]})[-2:] == ih.cpu_lines(table)


def test_render_readme_replaces_the_marked_block_only_and_refuses_bad_input(tmp_path):
    record, page = tmp_path / "record.json", tmp_path / "results.md"
    before, after = "# Results\n\n", "\n## Next\n"
    page.write_text(before + f"{ih.TABLE_BEGIN}\nold\n{ih.TABLE_END}" + after)
    with pytest.raises(ih.BenchError) as exc:
        ih.main(["--render-readme", "--record", str(record), "--readme", str(page)])
    assert str(exc.value) == (f"{record}: no recorded result; `python benchmarks/instance_heads.py --record` "
                              "writes it")
    record.write_text(json.dumps({"rows": {}}))
    with pytest.raises(ih.BenchError) as exc:
        ih.main(["--render-readme", "--record", str(record), "--readme", str(page)])
    assert str(exc.value) == f"{record}: not an instance-heads record (no 'tables' list)"
    assert page.read_text() == before + f"{ih.TABLE_BEGIN}\nold\n{ih.TABLE_END}" + after  # untouched

    record.write_text(json.dumps(ih.merge_table({}, fake_table())))
    assert ih.main(["--render-readme", "--record", str(record), "--readme", str(page)]) == 0
    block = EXPECTED_BLOCK.replace("benchmarks/results/instance_heads.json", str(record))
    assert page.read_text() == before + f"{ih.TABLE_BEGIN}\n{block}\n{ih.TABLE_END}" + after


def test_main_trains_scores_compares_and_records(tmp_path, monkeypatch, capsys, fake_training):
    """Two invocations of separate rows join one table of the record; a dirty tree's run is not recorded."""
    results = {"asis": scores(0.25, 0.375, 0.5, 0.875), "asis_warmup": scores(0.3125, 0.4375, 0.5625, 0.9375)}
    monkeypatch.setattr(ih, "generate_dataset", lambda root, spec: None)
    monkeypatch.setattr(ih, "code_identity", lambda: CODE)
    cpu = "Xeon (family 6 model 207, avx512), OpenBLAS SKYLAKEX"
    monkeypatch.setattr(ih, "machine_info", lambda device: {**MACHINE, "cpu": cpu})
    monkeypatch.setattr(ih, "evaluate", lambda run_dir, data, device: {
        k: v for k, v in results[run_dir.name].items() if k != "code_hash"})
    out, record = tmp_path / "runs", tmp_path / "record.json"
    common = ["--data", str(tmp_path / "data"), "--out", str(out), "--device", "cpu", "--record", str(record)]
    assert ih.main(["--rows", "asis", *common]) == 0
    assert ih.main(["--rows", "asis", "asis_warmup", *common]) == 0
    assert [c[0] for c in fake_training] == ["asis", "asis_warmup"]  # asis trained once, then reused
    printed = capsys.readouterr().out.splitlines()
    assert f"asis: reusing {out / 'asis' / 'benchmark.json'}" in printed
    assert printed[-2] == ("ASIS IF warm-up - ASIS: AP +6.2, AP50 +6.2, PQ +6.2, mWCov +0.0, mIoU +6.2 "
                           "(instance fusion after a warm-up against fusion from the start)")
    assert printed[-1] == f"record: {record} (docs/results.md: python benchmarks/instance_heads.py --render-readme)"
    [table] = json.loads(record.read_text())["tables"]
    assert list(table["rows"]) == ["asis", "asis_warmup"] and table["rows"]["asis_warmup"]["pq"] == 0.4375
    assert [r["cpu"] for r in table["rows"].values()] == [cpu, cpu]  # the scoring invocation's
    assert json.loads((out / "asis" / "benchmark.json").read_text())["cpu"] == cpu  # kept with the score

    written = record.read_bytes()
    monkeypatch.setattr(ih, "code_identity", lambda: {**CODE, "dirty": True})
    assert ih.main(["--rows", "asis", *common]) == 0  # other code (dirty): asis is set aside and retrained
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"record NOT written to {record}: the code differs from commit 439dd03 (dirty): commit it and rerun")
    assert record.read_bytes() == written


def test_the_results_page_block_is_generated_from_the_committed_record():
    page = ih.RESULTS_PAGE.read_text()
    block = page.split(ih.TABLE_BEGIN, 1)[1].split(ih.TABLE_END, 1)[0]
    if ih.RECORD.is_file():
        assert ih.render_readme(page, ih.render_markdown(ih.load_record(ih.RECORD)), ih.RESULTS_PAGE) == page
    else:  # no record committed yet: the block says so
        assert "generated by" not in block and "no record" in block.lower()


def test_every_row_has_its_config_and_every_comparison_names_rows():
    for row in ih.ROWS:
        assert (ROOT / "configs" / "finetune" / f"synthetic_minkunet14a_{row}.yaml").is_file(), row
    assert all(a in ih.ROWS and b in ih.ROWS for a, b, _ in ih.COMPARISONS)


def test_the_script_says_a_bad_record_in_one_line(tmp_path):
    page = tmp_path / "results.md"
    page.write_text(f"{ih.TABLE_BEGIN}\n{ih.TABLE_END}\n")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "instance_heads.py"), "--render-readme",
                           "--record", str(tmp_path / "none.json"), "--readme", str(page)],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"error: {tmp_path / 'none.json'}: no recorded result; "
                                   "`python benchmarks/instance_heads.py --record` writes it")
