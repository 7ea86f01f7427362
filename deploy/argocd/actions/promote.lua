-- Ask the operator to promote: a one-shot request annotation, handled once per distinct value.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["modelpilot.io/request"] = "promote@" .. os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
