"""The Argo CD health check (deploy/argocd/health.lua) run by a real Lua 5.1 on recorded job objects.

Argo CD runs custom checks in gopher-lua (Lua 5.1) with only the base, table and a reduced os
library (no string or math library unless `useOpenLibs` is set), with the object bound to the
global `obj`. `run_health` reproduces that: lupa's Lua 5.1, a chunk environment holding only the
base functions and `table`, and no string methods, so a script that would fail in Argo CD fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lupa.lua51 as lupa
import pytest
import yaml

from dstj_api.contract import GROUP, KIND
from scripts.argocd_cm_patch import render

ROOT = Path(__file__).resolve().parents[2]
HEALTH_LUA = ROOT / "deploy/argocd/health.lua"
CM_PATCH = ROOT / "deploy/argocd/argocd-cm-patch.yaml"
CASES = yaml.safe_load((Path(__file__).parent / "argocd/health_cases.yaml").read_text())
CM_KEY = f"resource.customizations.health.{GROUP}_{KIND}"

# Lua 5.1: load the script as a chunk whose only globals are what Argo CD's VM opens for a custom
# check from argocd-cm (base + table), with `obj` bound; the string metatable loses its methods.
_SANDBOX = """
return function(script, obj)
  local env = {table = table, obj = obj}
  for _, name in ipairs({"assert", "error", "ipairs", "next", "pairs", "pcall", "rawequal", "rawget",
                         "rawset", "select", "tonumber", "tostring", "type", "unpack", "xpcall",
                         "getmetatable", "setmetatable"}) do
    env[name] = _G[name]
  end
  local chunk, err = loadstring(script, "=health.lua")
  if chunk == nil then error(err) end
  setfenv(chunk, env)
  getmetatable("").__index = nil
  return chunk()
end
"""


def run_health(script: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Run a health script on `obj` the way Argo CD does; return the table it gives back."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=False)
    result = lua.execute(_SANDBOX)(script, lua.table_from(obj, recursive=True))
    assert lupa.lua_type(result) == "table", f"health.lua returned {result!r}, Argo CD needs a table"
    return dict(result.items())


@pytest.mark.parametrize("case", [pytest.param(c, id=c["name"]) for c in CASES])
def test_health_lua_reports_the_expected_health(case: dict[str, Any]) -> None:
    health = run_health(HEALTH_LUA.read_text(), case["object"])
    assert health["status"] == case["expect"]["status"], health
    assert case["expect"]["message"] in health["message"], health


def test_the_recorded_cases_cover_every_health_argo_cd_shows() -> None:
    assert {c["expect"]["status"] for c in CASES} >= {"Healthy", "Progressing", "Degraded", "Suspended"}
    assert len(CASES) >= 8


def test_health_lua_uses_no_library_argo_cd_leaves_closed() -> None:
    code = [line.split("--", 1)[0] for line in HEALTH_LUA.read_text().splitlines()]
    used = [line for line in code if re.search(r"\b(string|math|io|os|debug|require)\b", line)]
    assert not used, f"Argo CD opens only base and table for argocd-cm checks: {used}"


def test_the_sandbox_refuses_what_argo_cd_refuses() -> None:
    with pytest.raises(lupa.LuaError):
        run_health('return {status = string.format("%s", "Healthy")}', {})
    with pytest.raises(lupa.LuaError):
        run_health('return {status = ("Healthy"):lower()}', {})


def test_the_argocd_cm_patch_embeds_exactly_health_lua() -> None:
    cm = yaml.safe_load(CM_PATCH.read_text())
    assert (cm["kind"], cm["metadata"]["name"]) == ("ConfigMap", "argocd-cm")
    assert cm["data"] == {CM_KEY: HEALTH_LUA.read_text()}, "the snippet no longer embeds health.lua: run `make docs`"
    assert CM_PATCH.read_text() == render(HEALTH_LUA.read_text()), "the snippet is stale: run `make docs`"
