-- Freeze the rollout at its current step (spec.rollout.paused, as `modelpilot pause`).
if obj.spec.rollout == nil then
  obj.spec.rollout = {}
end
obj.spec.rollout.paused = true
return obj
