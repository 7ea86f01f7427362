-- Unfreeze the rollout and, like `modelpilot resume`, also continue past a pause step.
if obj.spec.rollout == nil then
  obj.spec.rollout = {}
end
obj.spec.rollout.paused = false
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["modelpilot.io/request"] = "resume@" .. os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
