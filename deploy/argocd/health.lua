-- Argo CD health check for DeepSeekTrainingJob (training.deepseek.dev).
--
-- Argo CD runs this body with the job bound to `obj` and reads the table it returns.
-- It runs in gopher-lua (Lua 5.1) with only the base, table and a "safe os" library opened
-- (custom checks from argocd-cm get no string or math library unless useOpenLibs is set),
-- so this script uses nothing but `type`, `tostring`, `ipairs`, comparisons and `..`.
--
-- Mapping (Argo CD's meanings: Healthy = working as intended; Progressing = not yet, but may
-- get there; Degraded = failed or stuck, a person should look; Suspended = paused on purpose):
--
--   no status / no phase                   -> Progressing "waiting for the operator"
--   status.observedGeneration < generation -> Progressing: the Progressing condition's reason and message
--                                             while an edit rolls out, else "spec change not yet observed";
--                                             Degraded when the rollout is blocked (RolloutBlocked: its
--                                             replacement pods cannot start; the old pods keep training)
--   Failed                                 -> Degraded, the Failed condition's reason and message
--   Succeeded                              -> Healthy "training finished"
--   Suspended                              -> Suspended
--   Synced=False, reason Forbidden/Invalid -> Degraded, the API server's refusal (a person must act)
--   Synced=False, other reasons            -> Progressing (conflicts, throttling: retried with backoff)
--   Stalled=True (any non-final phase)     -> Degraded, the Stalled condition's message
--   Pending                                -> Progressing "waiting for workers"
--   Running, Degraded=True                 -> Progressing (see below)
--   Running                                -> Healthy; with spec.autoscaling settled below the ceiling
--                                             (Scaling False, CapacityLimited or EfficiencyLimited) the
--                                             message adds why this size
--   anything else                          -> Unknown
--
-- Running with Degraded=True means the job trains on fewer workers than spec.replicas but at
-- least spec.minReplicas (below minReplicas the phase is Pending). We report Progressing, not
-- Healthy and not Degraded: it is Argo CD's own rule for a Deployment with fewer available
-- replicas than desired, the operator is already replacing the missing workers, and it is not
-- a failure (preemptions are routine for an elastic job), so it must not page anyone the way
-- Degraded does. A job that stops making progress is caught by the Stalled condition instead.
-- The cost: a job held below spec.replicas by a lasting capacity shortage stays Progressing
-- while it trains; if you would rather see Healthy there, change RUNNING_DEGRADED below, or let the
-- operator choose the size (spec.autoscaling): the operator then judges Degraded against the size it
-- chose (status.targetReplicas), so a job settled at the capacity it has is Healthy.

local RUNNING_DEGRADED = "Progressing"

local function condition(status, wanted)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

-- "Reason: message" from a condition, or `fallback` when the condition says nothing.
local function explain(c, fallback)
  if c == nil then
    return fallback
  end
  local reason = c.reason
  local message = c.message
  if message ~= nil and message ~= "" then
    if reason ~= nil and reason ~= "" then
      return reason .. ": " .. message
    end
    return message
  end
  if reason ~= nil and reason ~= "" then
    return reason
  end
  return fallback
end

local hs = {}
local status = obj.status
local phase = nil
if status ~= nil then
  phase = status.phase
end

if status == nil or phase == nil or phase == "" then
  hs.status = "Progressing"
  hs.message = "waiting for the operator"
  return hs
end

-- A status written for an older spec says nothing about the current one (the rule Argo CD
-- applies to Deployments), so this comes before the phase: e.g. right after `kubectl scale`.
-- The operator holds observedGeneration back until the training group runs the edited spec
-- (a new generation at a step boundary), and says what it waits for in the Progressing condition.
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
local observed = status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  local rolling = condition(status, "Progressing")
  if is_true(rolling) then
    if rolling.reason == "RolloutBlocked" then
      hs.status = "Degraded"
    end
    hs.message = explain(rolling, "rolling out the edited spec")
  else
    hs.message = "spec change not yet observed (generation " .. tostring(generation)
      .. ", observed " .. tostring(observed) .. ")"
  end
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = explain(condition(status, "Failed"), "training failed")
  return hs
end

if phase == "Succeeded" then
  hs.status = "Healthy"
  local done = condition(status, "Succeeded")
  if done ~= nil and done.message ~= nil and done.message ~= "" then
    hs.message = "training finished: " .. done.message
  else
    hs.message = "training finished"
  end
  return hs
end

if phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = explain(condition(status, "Suspended"), "suspended")
  return hs
end

-- The API server refused the operator's work: a Pod Security level the pods do not meet, a quota,
-- an admission webhook (Forbidden, Invalid) needs a person; a conflict or throttling is retried.
local synced = condition(status, "Synced")
if synced ~= nil and synced.status == "False" then
  if synced.reason == "Forbidden" or synced.reason == "Invalid" then
    hs.status = "Degraded"
  else
    hs.status = "Progressing"
  end
  hs.message = explain(synced, "the operator could not apply the spec")
  return hs
end

local stalled = condition(status, "Stalled")
if is_true(stalled) then
  hs.status = "Degraded"
  hs.message = explain(stalled, "no training progress")
  return hs
end

local degraded = condition(status, "Degraded")

if phase == "Pending" then
  hs.status = "Progressing"
  if is_true(degraded) and degraded.message ~= nil and degraded.message ~= "" then
    hs.message = "waiting for workers: " .. degraded.message
  else
    hs.message = "waiting for workers"
  end
  return hs
end

if phase == "Running" then
  if is_true(degraded) then
    hs.status = RUNNING_DEGRADED
    hs.message = "training on fewer workers than wanted: " .. explain(degraded, "Degraded")
  else
    hs.status = "Healthy"
    hs.message = explain(condition(status, "Running"), "training")
    local scaling = condition(status, "Scaling")
    if scaling ~= nil and scaling.status == "False"
        and (scaling.reason == "CapacityLimited" or scaling.reason == "EfficiencyLimited") then
      hs.message = hs.message .. "; " .. explain(scaling, "settled")
    end
  end
  return hs
end

hs.status = "Unknown"
hs.message = "unknown phase " .. tostring(phase)
return hs
