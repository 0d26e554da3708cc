"""What can be checked of the two images without building them: their requirement files are the
pinned closure of what they run, every COPY source exists, bases are pinned, users are non-root, and
entry points match the ones the local cluster maps the image names to.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from localcluster.nodeagent.images import ENTRYPOINTS
from scripts.image_requirements import FILES, lock_pins, render, requirement_sets

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {"deepseek-operator": ROOT / "operator" / "Dockerfile",
               "moe-trainer": ROOT / "trainer_image" / "Dockerfile"}
#: Modules each image runs: its entry point and the commands the operator gives its pods.
IMAGE_MODULES = {
    "deepseek-operator": ["dstj_operator.__main__"],
    "moe-trainer": ["moe_trainer.launch", "moe_trainer.train", "moe_trainer.rdzv_store",
                    "moe_trainer.runtime.k8s_membership", "torch.distributed.run"],
}
IMAGE_FILES = {"deepseek-operator": ["operator/requirements.txt"],
               "moe-trainer": ["trainer_image/requirements.txt", "trainer_image/requirements-cuda.txt"]}
TORCH_FAMILY = re.compile(r"^(torch|triton|nvidia-|cuda-)")


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in dockerfile.read_text().splitlines()
                                         if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in text.splitlines() if line.strip()]


def pinned(file: str) -> set[str]:
    """The canonical names a requirement file pins."""
    lines = (ROOT / file).read_text().splitlines()
    return {canonicalize_name(line.split("==")[0]) for line in lines if line and not line.startswith("#")}


@pytest.mark.parametrize("file", list(FILES))
def test_each_requirement_file_is_the_pinned_closure_derived_from_the_lock(file: str) -> None:
    expected = render(file, requirement_sets()[file], lock_pins())
    assert (ROOT / file).read_text() == expected, f"{file} is stale: run `make image-requirements`"


@pytest.mark.parametrize("file", list(FILES))
def test_every_pin_matches_requirements_lock(file: str) -> None:
    lock = lock_pins()
    for line in (ROOT / file).read_text().splitlines():
        if line and not line.startswith("#"):
            assert lock[canonicalize_name(line.split("==")[0])] == line, f"{file}: {line} is not the lock's pin"


def test_the_operator_image_carries_no_torch() -> None:
    assert not [n for n in pinned("operator/requirements.txt") if TORCH_FAMILY.match(n)]


def test_the_trainer_variants_split_torch_from_everything_else() -> None:
    assert pinned("trainer_image/requirements-cpu.txt") == {"torch"}
    assert all(TORCH_FAMILY.match(n) for n in pinned("trainer_image/requirements-cuda.txt"))
    assert not [n for n in pinned("trainer_image/requirements.txt") if TORCH_FAMILY.match(n)]


@pytest.mark.parametrize("image", list(IMAGE_MODULES))
def test_every_distribution_an_image_imports_is_in_its_requirement_files(image: str) -> None:
    # Import what the image runs in a fresh interpreter and map every loaded top-level module to its
    # distribution: one missing from the image's files would be an ImportError in the pod.
    # (_distutils_hack is put there by setuptools' .pth file at start-up, not imported by our code.)
    probe = (f"import importlib, json, sys\nfor m in {IMAGE_MODULES[image]!r}: importlib.import_module(m)\n"
             "from importlib.metadata import packages_distributions as p\nd = p()\n"
             "tops = {m.split('.')[0] for m in sys.modules} - {'_distutils_hack'}\n"
             "print(json.dumps(sorted({x for m in tops for x in d.get(m, [])})))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    used = {canonicalize_name(d) for d in json.loads(out.stdout)}
    have = set().union(*(pinned(f) for f in IMAGE_FILES[image]))
    assert not used - have, f"{image} imports {sorted(used - have)} but its requirement files lack them"


@pytest.mark.parametrize("image", list(DOCKERFILES))
def test_every_copy_source_exists_in_the_build_context(image: str) -> None:
    for op, args in instructions(DOCKERFILES[image]):
        if op == "COPY" and "--from=" not in args:
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{DOCKERFILES[image]}: COPY {source} does not exist"


@pytest.mark.parametrize("image", list(DOCKERFILES))
def test_the_base_image_is_pinned_and_the_user_is_not_root(image: str) -> None:
    steps = instructions(DOCKERFILES[image])
    base = next(a for op, a in steps if op == "ARG" and a.startswith("PYTHON_IMAGE="))
    assert re.fullmatch(r"PYTHON_IMAGE=python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base), base
    users = [a for op, a in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
    assert len([op for op, _ in steps if op == "FROM"]) >= 2, "build in one stage, run in another"


@pytest.mark.parametrize("image", list(DOCKERFILES))
def test_the_entry_point_is_the_one_the_local_cluster_runs_for_the_image(image: str) -> None:
    entry = [a for op, a in instructions(DOCKERFILES[image]) if op == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ENTRYPOINTS[image]


def test_the_trainer_variant_is_checked_at_build_time() -> None:
    text = DOCKERFILES["moe-trainer"].read_text()
    assert "ARG VARIANT=cpu" in text and 'case "$VARIANT" in cpu|cuda)' in text
    assert "download.pytorch.org/whl/cpu" in text


@pytest.mark.parametrize("module", ["moe_trainer.launch", "moe_trainer.rdzv_store"])
def test_the_trainer_commands_answer_help(module: str) -> None:
    res = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "usage:" in res.stdout, res.stderr


def test_the_operator_entry_point_imports_without_starting() -> None:
    # `python -m dstj_operator` has no --help yet (it would start the operator); import it only.
    probe = "import runpy, dstj_operator.__main__ as m; assert callable(m.main)"
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=120)


def test_e2e_kind_without_docker_or_kind_says_what_is_missing_and_exits_2(tmp_path: Path) -> None:
    # A PATH with only what the script needs before its check, so no docker or kind can be found.
    for tool in ("bash", "dirname", "sed"):
        (tmp_path / tool).symlink_to(subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True,
                                                    text=True, check=True).stdout.strip())
    res = subprocess.run([str(tmp_path / "bash"), str(ROOT / "scripts" / "e2e-kind.sh")], capture_output=True,
                         text=True, timeout=60, env={"PATH": str(tmp_path)})
    assert res.returncode == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "docker" in res.stderr and "kind" in res.stderr
    assert "pytest tests/e2e" in res.stderr  # how to run the suite on the local cluster instead


@pytest.mark.parametrize(("ci", "code"), [("", 0), ("true", 1)])
def test_make_test_builds_no_image_where_real_nodes_cannot_run_and_ci_fails_on_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], ci: str, code: int) -> None:
    from scripts import images

    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(images.realnodes, "prerequisites", lambda: "real nodes need root")
    monkeypatch.setattr(images, "build_all", lambda *_a: pytest.fail("built an image no node can run"))
    assert images.main(["--skip-without-real-nodes"]) == code
    assert "real nodes need root" in capsys.readouterr().err
