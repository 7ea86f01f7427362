-- Argo CD health check for modelpilot.io/ModelDeployment (Lua 5.1, as Argo CD's gopher-lua).
-- Install: argocd-cm key resource.customizations.health.modelpilot.io_ModelDeployment (see application.yaml).
--
-- Healthy      phase Ready and the Ready condition not False
-- Progressing  no status yet, a spec generation the operator has not seen, phase Pending/Progressing
-- Suspended    phase Paused (spec.rollout.paused, a pause step waiting for promotion, kill switch)
-- Degraded     phase Degraded/RolledBack/InvalidSpec, or the InvalidSpec condition True
-- Unknown      any other phase (a newer operator): never reported Healthy by mistake
local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function first_message(status, fallback)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  return fallback
end

local status = obj.status
if status == nil or status.phase == nil or status.phase == "" then
  hs.status = "Progressing"
  hs.message = "Waiting for the ModelPilot operator to reconcile"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local invalid = condition(status, "InvalidSpec")
if status.phase == "InvalidSpec" or (invalid ~= nil and invalid.status == "True") then
  hs.status = "Degraded"
  if invalid ~= nil and invalid.message ~= nil then
    hs.message = "Invalid spec: " .. invalid.message
  else
    hs.message = first_message(status, "Invalid spec")
  end
  return hs
end

local phase = status.phase
local degraded = condition(status, "Degraded")
local degraded_true = degraded ~= nil and degraded.status == "True"

if phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = first_message(status, "The new revision was rolled back")
  return hs
end

if phase == "Degraded" then
  hs.status = "Degraded"
  if degraded_true and degraded.message ~= nil then
    hs.message = degraded.reason .. ": " .. degraded.message
  else
    hs.message = first_message(status, "Degraded")
  end
  return hs
end

if phase == "Paused" then
  hs.status = "Suspended"
  hs.message = first_message(status, "Rollout paused")
  return hs
end

if phase == "Ready" then
  local ready = condition(status, "Ready")
  if ready ~= nil and ready.status == "False" then
    hs.status = "Progressing"
    hs.message = ready.message or "Waiting for the stable revision's pods"
  elseif degraded_true then
    hs.status = "Degraded"
    hs.message = degraded.reason .. ": " .. (degraded.message or "")
  else
    hs.status = "Healthy"
    hs.message = first_message(status, "Serving")
  end
  return hs
end

if phase == "Pending" or phase == "Progressing" then
  hs.status = "Progressing"
  local msg = first_message(status, "Rolling out")
  if status.canaryRevision ~= nil and status.canaryRevision ~= "" then
    msg = msg .. " (candidate " .. status.canaryRevision .. " at " .. tostring(status.canaryWeight or 0) .. "%)"
  end
  if degraded_true then
    msg = msg .. "; " .. degraded.reason .. ": " .. (degraded.message or "")
  end
  hs.message = msg
  return hs
end

hs.status = "Unknown"
hs.message = "Unknown phase " .. tostring(phase)
return hs
