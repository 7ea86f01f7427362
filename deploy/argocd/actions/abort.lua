-- Ask the operator to abort: a one-shot request annotation, handled once per distinct value.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["modelpilot.io/request"] = "abort@" .. os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
