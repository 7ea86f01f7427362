-- Ask the operator to retry: a one-shot request annotation, handled once per distinct value.
if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
obj.metadata.annotations["modelpilot.io/request"] = "retry@" .. os.date("!%Y-%m-%dT%H:%M:%SZ")
return obj
