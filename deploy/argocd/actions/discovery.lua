-- Argo CD resource actions for ModelDeployment: the same requests as `modelpilot promote|abort|retry|
-- pause|resume` (an annotation or spec.rollout.paused), offered only when they can do something.
local actions = {}
local status = obj.status or {}
local paused = obj.spec ~= nil and obj.spec.rollout ~= nil and obj.spec.rollout.paused == true
local candidate = status.canaryRevision ~= nil and status.canaryRevision ~= ""
actions["promote"] = {["disabled"] = not candidate}
actions["abort"] = {["disabled"] = not candidate}
actions["retry"] = {["disabled"] = status.phase ~= "RolledBack"}
actions["pause"] = {["disabled"] = paused}
actions["resume"] = {["disabled"] = not paused and status.phase ~= "Paused"}
return actions
