"""The operator-trainer contract has one definition: `dstj_api.contract`, imported by everyone else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dstj_api import contract

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("operator", "trainer_image", "tests", "scripts", "benchmarks", "localcluster")
HOME = ROOT / "api" / "dstj_api" / "contract.py"


def _python_files() -> list[Path]:
    return [p for d in SOURCES for p in (ROOT / d).rglob("*.py") if ".venv" not in p.parts and p != Path(__file__)]


CONTRACT_VALUES = {name: value for name, value in vars(contract).items()
                   if name.isupper() and isinstance(value, str) and (name.startswith("ENV_") or name in
                                                                    ("GROUP", "PLURAL", "KIND"))}


@pytest.mark.parametrize("name", sorted(CONTRACT_VALUES))
def test_no_module_spells_a_contract_name_as_a_literal(name: str) -> None:
    value = CONTRACT_VALUES[name]
    # A quoted literal that is the value, or (for the group) starts with it: labels, apiVersions, CRD names.
    tail = r"""[/._"']""" if name == "GROUP" else ""
    pattern = re.compile(r"""["']""" + re.escape(value) + tail)
    copies = [f"{p.relative_to(ROOT)}:{n}" for p in _python_files()
              for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not copies, f"import {name} from dstj_api.contract instead of copying {value!r}: {copies}"


def test_the_old_names_still_import_from_the_operator() -> None:
    from dstj_operator import children, crd

    assert (crd.GROUP, crd.VERSION, crd.KIND, crd.PLURAL, crd.SHORT) == (
        contract.GROUP, contract.VERSION, contract.KIND, contract.PLURAL, contract.SHORT_NAME)
    assert (children.JOB_LABEL, children.INDEX_LABEL, children.ROLE_LABEL) == (
        contract.JOB_LABEL, contract.INDEX_LABEL, contract.ROLE_LABEL)
