-- Argo CD health check for StrapiInstance and StrapiWebhook (webhooks.strapi-operator.dev).
-- Argo CD runs it with gopher-lua (Lua 5.1); `obj` is the live object.
--
-- Healthy:     Ready=True for the current generation.
-- Progressing: no status yet, a status for an older generation, or Ready=False while the
--              operator is still converging (registering in Strapi, waiting for the receiver
--              to route the new spec, verifying end to end).
-- Degraded:    Ready=False for any other reason: an invalid spec, a missing Secret, Strapi
--              unreachable or refusing the credentials, unknown models.
local hs = {}
local converging = {
  InstanceNotRegistered = true,
  WaitingForReceiver = true,
  EventsPending = true,
  NotVerified = true,
}
local generation = obj.metadata and obj.metadata.generation
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end
if generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile generation " .. generation
  return hs
end
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    if generation ~= nil and condition.observedGeneration ~= nil
        and condition.observedGeneration < generation then
      hs.status = "Progressing"
      hs.message = "Waiting for the operator to reconcile generation " .. generation
    elseif condition.status == "True" then
      hs.status = "Healthy"
      hs.message = condition.message or "Ready"
    elseif condition.status == "False" and not converging[condition.reason] then
      hs.status = "Degraded"
      hs.message = (condition.reason or "NotReady") .. ": " .. (condition.message or "")
    else
      hs.status = "Progressing"
      hs.message = (condition.reason or "Unknown") .. ": " .. (condition.message or "")
    end
    return hs
  end
end
hs.status = "Progressing"
hs.message = "Waiting for the Ready condition"
return hs
