"""`make gpu-check` (tools/gpu_check.sh) without a GPU: the one-line exit where there is no CUDA
GPU, the step bookkeeping and the summary (tools/gpu_check_summary.py), the .deb files unpacked
into a prefix and install.sh leaving those packages to them (VOXSEG_DEB_ROOT), the runs' settings
against the configs' schemas, and tools/gpu_check_ddp.py's data-parallel path on gloo.

Nothing here touches the repository's .venv, the wheel cache or runs/: the script's functions are
called after sourcing it (as tests/test_install.py does with install.sh), with every folder in
tmp_path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, fake_torch

SCRIPT = ROOT / "tools" / "gpu_check.sh"
INSTALL = ROOT / "tools" / "install" / "install.sh"


def _load_summary_module():
    spec = importlib.util.spec_from_file_location("gpu_check_summary", ROOT / "tools" / "gpu_check_summary.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


summary = _load_summary_module()


def tool_dir(path: Path, smi: str | None) -> Path:
    """A PATH of its own: dirname, head and timeout, and nvidia-smi running `smi` (None: absent)."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("dirname", "head", "tail", "timeout"):
        (path / name).symlink_to(shutil.which(name))
    if smi is not None:
        (path / "nvidia-smi").write_text(f"#!/bin/sh\n{smi}\n")
        (path / "nvidia-smi").chmod(0o755)
    return path




def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_script_parses_and_passes_shellcheck():
    for script in (SCRIPT, INSTALL):
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", str(SCRIPT), str(INSTALL)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


# --- no CUDA GPU: one line, exit 0, nothing written ------------------------------------------------

@pytest.mark.parametrize("smi, env, why", [
    (None, {}, "nvidia-smi not found"),
    ('echo "NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver."; exit 9', {},
     "nvidia-smi sees none: NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver."),
    ("echo 'NVIDIA H100 80GB HBM3, 81559 MiB, 580.65.06'", {"FAKE_CUDA": "", "FAKE_TORCH": "2.13.0+cpu"},
     "torch 2.13.0+cpu is a CPU build"),
    ("echo 'NVIDIA H100 80GB HBM3, 81559 MiB, 580.65.06'", {"FAKE_GPUS": "0"},
     "torch 2.11.0+cu130 (CUDA 13.0) sees no CUDA device"),
    ("echo 'NVIDIA H100 80GB HBM3, 81559 MiB, 580.65.06'", {"FAKE_TORCH": "missing"},
     "cannot import torch: ImportError: fake: no torch"),
])
def test_without_a_cuda_gpu_it_says_so_in_one_line(tmp_path, smi, env, why):
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "tools" / "gpu_check.sh")
    home = tmp_path / "home"
    home.mkdir()
    run_env = {"PATH": str(tool_dir(tmp_path / "bin", smi)), "HOME": str(home),
               "PYTHONPATH": str(fake_torch(tmp_path)), "PYTHON": sys.executable, **env}
    result = subprocess.run(["/bin/bash", str(repo / "tools" / "gpu_check.sh")], capture_output=True, text=True,
                            env=run_env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    assert lines[0].startswith("gpu-check: no CUDA GPU here (") and lines[0].endswith("); nothing to check")
    assert why in lines[0]
    assert files_under(repo) == ["tools", "tools/gpu_check.sh"]  # no .venv, no runs/
    assert files_under(home) == []  # no cache


def test_the_repository_script_leaves_the_venv_alone(tmp_path):
    venv_before = files_under(ROOT / ".venv" / "bin") if (ROOT / ".venv").is_dir() else None
    cfg = ROOT / ".venv" / "pyvenv.cfg"
    mtime = cfg.stat().st_mtime_ns if cfg.exists() else None
    runs = (ROOT / "runs" / "gpu_check").exists()
    result = subprocess.run(["/bin/bash", str(SCRIPT)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PATH": str(tool_dir(tmp_path / "bin", None))})
    assert result.returncode == 0 and result.stdout.count("\n") == 1, result.stdout + result.stderr
    assert (files_under(ROOT / ".venv" / "bin") if venv_before is not None else None) == venv_before
    assert (cfg.stat().st_mtime_ns if cfg.exists() else None) == mtime
    assert (ROOT / "runs" / "gpu_check").exists() == runs


# --- the script's functions (sourced) --------------------------------------------------------------

def sourced(script: str, tmp_path: Path, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run `script` after sourcing gpu_check.sh, its output folder and cache in tmp_path."""
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("PIP_", "VOXSEG_")) and k not in ("CPATH", "LIBRARY_PATH", "LD_LIBRARY_PATH")}
    base.update(VOXSEG_GPU_CHECK_OUT=str(tmp_path / "out"), VOXSEG_CACHE=str(tmp_path / "cache"),
                VOXSEG_WHEELS=str(tmp_path / "wheels"), VOXSEG_DEBS=str(tmp_path / "debs"), PYTHON=sys.executable)
    base.update(env or {})
    return subprocess.run(["bash", "-c", f'source "{SCRIPT}"\n{script}'], capture_output=True, text=True,
                          env=base, timeout=timeout)


FAKE_CHECK = r'''
detect_gpu() { GPU_LINE="Fake GPU, 1 MiB, 1.0"; GPU_COUNT=1; ARCHS=9.0; TORCH_LINE="fake"; }
me_wheel_key() { info me_wheel "KEY (fake)"; }
link_interpreter_venv() { :; }  # (PYTHON, this venv's Python, would be linked into the repository's .venv)
run_checks() {
  run_step good 20 echo hello
  run_step bad 20 sh -c 'echo "line $PWD"; echo boom; exit 3'
  run_step slow 1 sleep 30
  if passed good && ! passed bad; then skip_step later "bad failed"; fi
}
main
'''


def test_steps_are_timed_recorded_and_summarised(tmp_path):
    result = sourced(FAKE_CHECK, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    out = tmp_path / "out"
    rows = [line.split("\t") for line in (out / "results.tsv").read_text().splitlines()]
    assert [r[:2] for r in rows] == [["good", "pass"], ["bad", "FAIL"], ["slow", "FAIL"], ["later", "SKIP"]]
    assert rows[1][3:] == ["3", "exit status 3"] and rows[2][4] == "timed out after 1 s"
    assert float(rows[2][2]) < 20  # the hung step was stopped
    assert (out / "logs" / "good.log").read_text() == "hello\n"
    assert f"line {ROOT}" in (out / "logs" / "bad.log").read_text()  # steps run in the repository root
    text = result.stdout
    # the failed steps' tails, then the table last
    assert "--- bad failed (exit status 3)" in text and "boom" in text
    assert text.index("boom") < text.index("gpu-check summary")
    table = text[text.index("gpu-check summary"):]
    assert "GPU: Fake GPU, 1 MiB, 1.0" in table and "MinkowskiEngine wheel: KEY (fake)" in table
    assert "later" in table and "bad failed" in table
    assert table.rstrip().splitlines()[-1] == "gpu-check: 1 of 4 steps passed; not passed: bad, slow, later"


def test_wheels_brought_along_turn_the_index_off(tmp_path):
    show = 'use_brought_wheels >/dev/null; echo "${PIP_NO_INDEX:-unset}|${PIP_FIND_LINKS:-unset}"'
    (tmp_path / "out").mkdir()
    (tmp_path / "wheels").mkdir()  # an empty folder is not a wheelhouse
    assert sourced(show, tmp_path).stdout.strip() == "unset|unset"
    (tmp_path / "wheels" / "pyyaml-6.0-py3-none-any.whl").write_text("")
    assert sourced(show, tmp_path).stdout.strip() == f"1|{tmp_path / 'wheels'}"


def make_deb(folder: Path, package: str, files: dict[str, str]) -> Path:
    """A minimal .deb holding `files` and the doc folder every package has."""
    tree = folder / f"{package}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text(f"Package: {package}\nVersion: 1.0\nArchitecture: all\n"
                                             f"Maintainer: test <t@example.org>\nDescription: fake\n")
    for rel, text in {**files, f"usr/share/doc/{package}/copyright": "fake"}.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    deb = folder / f"{package}.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", str(tree), str(deb)], check=True,
                   capture_output=True)
    shutil.rmtree(tree)
    return deb


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="needs dpkg-deb")
def test_debs_are_unpacked_into_a_prefix_and_put_on_the_paths(tmp_path):
    multiarch = f"{platform.machine()}-linux-gnu"
    debs = tmp_path / "debs"
    debs.mkdir()
    make_deb(debs, "libopenblas-pthread-dev", {
        f"usr/include/{multiarch}/openblas-pthread/cblas.h": "/* fake */",
        f"usr/lib/{multiarch}/openblas-pthread/libopenblas.so": ""})
    make_deb(debs, "ninja-build", {"usr/bin/ninja": "#!/bin/sh\n"})
    (tmp_path / "out").mkdir()
    result = sourced('unpack_debs >/dev/null && printf "%s\\n" "$VOXSEG_DEB_ROOT" "$CPATH" "$LIBRARY_PATH" '
                     '"$LD_LIBRARY_PATH" "$PATH"', tmp_path, {"CPATH": "/old/include", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    root, cpath, library_path, ld_path, path = result.stdout.splitlines()
    prefix = tmp_path / "cache" / "debs-root"
    assert root == str(prefix)
    assert (prefix / f"usr/include/{multiarch}/openblas-pthread/cblas.h").is_file()
    assert (prefix / "usr/share/doc/ninja-build/copyright").is_file()
    assert cpath.split(":") == [str(prefix / f"usr/include/{multiarch}/openblas-pthread"),
                                str(prefix / f"usr/include/{multiarch}"), str(prefix / "usr/include"), "/old/include"]
    libs = [str(prefix / f"usr/lib/{multiarch}/openblas-pthread"), str(prefix / f"usr/lib/{multiarch}")]
    assert library_path.split(":") == libs and ld_path.split(":") == libs
    assert path.split(":") == [str(prefix / "usr/bin"), "/usr/bin", "/bin"]
    assert "debs\t2 .deb files" in (tmp_path / "out" / "info.tsv").read_text()


def test_no_debs_changes_nothing(tmp_path):
    (tmp_path / "out").mkdir()
    result = sourced('unpack_debs; echo "${VOXSEG_DEB_ROOT:-unset}|${CPATH:-unset}"', tmp_path)
    assert result.stdout.strip() == "unset|unset" and not (tmp_path / "cache").exists()


def base_python() -> str:
    """The Python installation under this (venv's) interpreter."""
    exe = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    return str(exe if exe.exists() else Path(sys.base_prefix) / "bin" / "python3")


LINK = 'ROOT="$REPO"; PY="$ROOT/.venv/bin/python"; link_interpreter_venv; echo "rc=$?"'


def test_a_venv_interpreter_is_linked_into_the_new_venv(tmp_path):
    """PYTHON in a venv of its own (the GPU image's /opt/torch/.venv): .venv, made with
    --system-site-packages, sees that venv's torch through a .pth file."""
    interp = tmp_path / "interp"
    subprocess.run([base_python(), "-m", "venv", "--without-pip", str(interp)], check=True)
    purelib = subprocess.run([str(interp / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "torch").mkdir()
    (Path(purelib) / "torch" / "__init__.py").write_text('__version__ = "2.11.0+cu130"\n')
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "out").mkdir()
    result = sourced(LINK, tmp_path, {"PYTHON": str(interp / "bin" / "python"), "REPO": str(repo)}, timeout=300)
    assert result.stdout.strip().endswith("rc=0"), result.stdout + result.stderr
    venv_python = repo / ".venv" / "bin" / "python"
    assert "include-system-site-packages = true" in (repo / ".venv" / "pyvenv.cfg").read_text()
    seen = subprocess.run([str(venv_python), "-c", "import torch; print(torch.__version__)"], capture_output=True,
                          text=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert seen.stdout.strip() == "2.11.0+cu130", seen.stderr
    assert "venv\t" in (tmp_path / "out" / "info.tsv").read_text()


def test_a_plain_python_or_another_venv_is_left_alone(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "out").mkdir()
    # a Python installation itself: nothing to link, no venv made here
    result = sourced(LINK, tmp_path, {"PYTHON": base_python(), "REPO": str(repo)})
    assert result.stdout.strip().endswith("rc=0") and not (repo / ".venv").exists(), result.stderr
    # a .venv made without --system-site-packages (a CPU `make install`): not changed
    subprocess.run([base_python(), "-m", "venv", "--without-pip", str(repo / ".venv")], check=True)
    before = files_under(repo / ".venv")
    result = sourced(LINK, tmp_path, {"PYTHON": sys.executable, "REPO": str(repo)})
    assert result.stdout.strip().endswith("rc=0"), result.stderr
    assert files_under(repo / ".venv") == before


# --- install.sh: packages unpacked under VOXSEG_DEB_ROOT are not apt-get installed -----------------

def apt_sandbox(tmp_path: Path) -> dict:
    """dpkg that knows no package, apt-get and sudo that record their arguments."""
    bin_dir = tmp_path / "aptbin"
    bin_dir.mkdir()
    log = tmp_path / "apt.log"
    (bin_dir / "dpkg").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "apt-get $*" >> "{log}"\n')
    (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "VOXSEG_DEB_ROOT"}
    env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    return env


@pytest.mark.parametrize("unpacked, installed", [
    (None, ["libopenblas-dev", "ninja-build", "libusb-1.0-0"]),
    (["libopenblas-dev", "ninja-build"], ["libusb-1.0-0"]),
    (["libopenblas-dev", "ninja-build", "libusb-1.0-0"], None),
])
def test_install_leaves_unpacked_debs_to_the_prefix(tmp_path, unpacked, installed):
    env = apt_sandbox(tmp_path)
    if unpacked is not None:
        root = tmp_path / "debs-root"
        for package in unpacked:
            doc = root / "usr" / "share" / "doc" / package
            doc.parent.mkdir(parents=True, exist_ok=True)
            if package == "ninja-build":  # a doc folder may be a link to another package's (dangling here)
                doc.symlink_to("elsewhere")
            else:
                doc.mkdir()
        env["VOXSEG_DEB_ROOT"] = str(root)
    result = subprocess.run(["bash", "-c", f'source "{INSTALL}"\ninstall_system_packages'], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    calls = (tmp_path / "apt.log").read_text().splitlines() if (tmp_path / "apt.log").exists() else []
    if installed is None:
        assert calls == []
    else:
        assert calls[0] == "apt-get update -qq"
        assert calls[1].split()[-len(installed):] == installed and "install" in calls[1].split()


# --- the summary's figures ---------------------------------------------------------------------------

BENCH_SCAN_LOG = """\
device cuda (NVIDIA H100 80GB HBM3), 16 CPU thread(s); 3 warm-up + 20 timed steps per run, 2 run(s) each, alternating
  voxel    voxels  voxseg ms   bare ms  voxseg GB  bare GB  voxseg/bare
  0.05m   101,234       81.2      80.0       2.10     2.05        1.015
voxseg memory ratio (voxseg / bare ME peak memory) at 0.05 m: 1.024 (target <= 1.10)
voxseg overhead ratio (voxseg / bare ME time per step) at 0.05 m: 1.015 (target <= 1.05)
"""
BENCH_BATCH_LOG = """\
  voxel  voxels/batch  voxseg scans/s  bare scans/s  voxseg ms   bare ms  voxseg GB  bare GB  voxseg/bare
  0.05m       812,345            27.5          28.9        291       277       9.10     8.90        1.051
voxseg memory ratio (voxseg / bare ME peak memory) at 0.05 m, batch 8: 1.022 (target <= 1.10)
voxseg overhead ratio (voxseg / bare ME time per step, = bare / voxseg scans/s) at 0.05 m, batch 8: 1.051 \
(target <= 1.05)
"""
# (made-up numbers in backbone.py's formats, to test the parsing: not measurements)


def test_benchmark_figures():
    assert summary.bench_figures(BENCH_SCAN_LOG, Path()) == (
        "voxseg 81.2 ms/step, bare 80.0, ratio 1.015, memory ratio 1.024", None)
    assert summary.bench_figures(BENCH_BATCH_LOG, Path()) == (
        "voxseg 27.5 scans/s, bare 28.9, ratio 1.051, memory ratio 1.022", None)
    assert summary.bench_figures("Traceback ...\nRuntimeError: CUDA out of memory\n", Path()) == ("", None)


@pytest.mark.parametrize("line, figures, problem", [
    ("3 passed, 512 deselected in 61.20s", "3 passed", None),
    ("1 failed, 2 passed, 512 deselected in 70.00s", "1 failed, 2 passed", None),
    ("3 skipped, 512 deselected in 9.10s", "3 skipped", "cuda tests skipped"),
    ("===== 3 skipped, 512 deselected in 9.10s =====", "3 skipped", "cuda tests skipped"),
    ("512 deselected in 3.00s", "", "no cuda test passed"),
])
def test_pytest_figures(line, figures, problem):
    got, why = summary.pytest_figures(f"....\n{line}\n", Path())
    assert got == figures
    assert (why is None) if problem is None else (problem in why)


def test_a_step_that_exits_0_without_doing_its_job_fails(tmp_path):
    out = tmp_path / "out"
    (out / "logs").mkdir(parents=True)
    (out / "ddp").mkdir()
    (out / "ddp" / "metrics.json").write_text(json.dumps({"step": 2, "miou": 0.125, "train_losses": {"loss": 2.5}}))
    (out / "logs" / "ddp-nccl.log").write_text(
        "training on 8 of 8 labelled scans, validating on 2; device cuda:0; 1 processes (nccl), global batch 2; "
        "output x\n")
    (out / "logs" / "pretrain.log").write_text("pretraining on 8 scans; device cuda:0; output x\n")
    (out / "logs" / "install.log").write_text(
        "[install] building MinkowskiEngine 0.5.4 with CUDA 13.0 for 9.0\n"
        "[install] done: torch 2.11.0+cu130, MinkowskiEngine 0.5.4 (CUDA)\n")
    (out / "results.tsv").write_text("install\tpass\t200.5\t0\t\nddp-nccl\tpass\t20\t0\t\npretrain\tpass\t30\t0\t\n")
    steps = {s.name: summary.fill(s, out) for s in summary.read_results(out / "results.tsv")}
    assert steps["install"].status == "pass"
    assert steps["install"].figures == "MinkowskiEngine wheel built; torch 2.11.0+cu130, ME 0.5.4 (CUDA)"
    assert steps["ddp-nccl"].status == "pass"
    assert steps["ddp-nccl"].figures == "1 process(es), nccl, global batch 2; step 2, loss 2.500, mIoU 12.5%"
    assert steps["pretrain"].status == "FAIL" and steps["pretrain"].note == "no encoder written"
    assert summary.main([str(out)]) == 1
    gloo = "training ...; device cpu; 1 processes (gloo), global batch 1; output x\n"
    assert summary.ddp_figures(gloo, out)[1] == "process group gloo, not nccl"
    assert summary.ddp_figures("training ...; device cuda:0; output x\n", out)[1].startswith("trained without")


# --- the runs' settings and the DDP helper -------------------------------------------------------------

def script_array(name: str, tmp_path: Path) -> list[str]:
    result = sourced(f'printf "%s\\n" "${{{name}[@]}}"', tmp_path)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_pretraining_settings_fit_the_schema(tmp_path):
    from voxseg.engine import pretrain

    args = script_array("PRETRAIN_ARGS", tmp_path)
    assert args[0] == "--config"
    cfg = pretrain.resolve(str(ROOT / args[1]), [*args[2:], "train.max_steps=10"])
    assert cfg["model"]["backbone"]["voxel_size"] == 0.05 and cfg["train"]["device"] == "cuda"
    assert cfg["data"]["train"]["group_params"] == {"stacking": {"window": 4, "stride": 2}}


def test_ddp_helper_takes_the_data_parallel_path_in_a_world_of_one(tiny_dataset, tmp_path):
    """tools/gpu_check_ddp.py under torchrun with one process, with the fine-tuning settings of
    gpu_check.sh made small for the CPU: DDP over gloo (NCCL on a GPU), two steps, a validation."""
    args = script_array("FINETUNE_ARGS", tmp_path)
    out = tmp_path / "ddp"
    cpu = [f"data.root={tiny_dataset}", "data.val.sequences=[1]", "model.backbone.voxel_size=0.4", "train.device=cpu",
           "train.batch_size=1", "train.num_workers=0", "train.threads=1", "train.max_steps=2",
           "train.warmup_steps=1", "train.val_every=2", f"output_dir={out}"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                             str(ROOT / "tools" / "gpu_check_ddp.py"), *args, *cpu],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "; 1 processes (gloo), global batch 1;" in result.stdout
    assert json.loads((out / "metrics.json").read_text())["step"] == 2
    assert summary.ddp_figures(result.stdout, tmp_path)[1] == "process group gloo, not nccl"
