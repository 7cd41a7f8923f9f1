-- Health of a Weft object (TrafficSplit, RetryPolicy, CircuitBreaker,
-- FaultInjection, RateLimitPolicy,
-- AccessPolicy, MeshIdentity) for Argo CD: Healthy when Ready is True at
-- the object's current generation; Progressing while the controller has
-- not reported on this generation or the proxies are still taking the
-- configuration (reason Pending) or certificates are being issued (reason
-- Issuing); Degraded, with the condition's message, when Ready is False
-- for any other reason.
local hs = {}
local gen = obj.metadata.generation
local st = obj.status
if st == nil or st.conditions == nil or #st.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the Weft controller to report status"
  return hs
end
if gen ~= nil and (st.observedGeneration == nil or st.observedGeneration < gen) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Weft controller to observe generation " .. gen
  return hs
end
local ready = nil
for _, c in ipairs(st.conditions) do
  if c.type == "Ready" then
    ready = c
  end
end
if ready == nil or (gen ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < gen) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition of generation " .. tostring(gen)
  return hs
end
local msg = ready.message
if msg == nil or msg == "" then
  msg = ready.reason or ""
end
if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "False" and ready.reason ~= "Pending" and ready.reason ~= "Issuing" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
end
hs.message = msg
return hs
