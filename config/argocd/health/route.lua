-- Health of an HTTPRoute or GRPCRoute for Argo CD. Weft's entries in
-- status.parents (controllerName weft.dev/mesh-controller, one per Service
-- parent) are Healthy when Accepted and Programmed are True at the route's
-- generation, Progressing while Weft has not reported on this generation
-- or Programmed is not yet True (Unknown, reason Pending), and Degraded
-- with the condition's message when Accepted, ResolvedRefs or Programmed
-- is False or PartiallyInvalid is True. Entries of other controllers (a
-- Gateway's) count as Argo CD's own check has it: Degraded when Accepted
-- or ResolvedRefs is False, Progressing while Programmed, where set, is
-- not True.
local hs = {}
local weft = "weft.dev/mesh-controller"
local gen = obj.metadata.generation

local function parentName(p)
  local ref = p.parentRef or {}
  local kind = ref.kind or "Gateway"
  local name = kind .. " " .. (ref.name or "")
  if ref.port ~= nil then
    name = name .. ":" .. ref.port
  end
  return name
end

local function find(conds, t)
  for _, c in ipairs(conds or {}) do
    if c.type == t then
      return c
    end
  end
  return nil
end

local function current(p)
  if gen == nil then
    return true
  end
  for _, c in ipairs(p.conditions or {}) do
    if c.observedGeneration ~= nil and c.observedGeneration >= gen then
      return true
    end
  end
  return false
end

local function text(c)
  if c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return c.reason or c.type
end

local function serviceParents()
  local n = 0
  for _, ref in ipairs((obj.spec or {}).parentRefs or {}) do
    if ref.kind == "Service" and (ref.group == nil or ref.group == "" or ref.group == "core") then
      n = n + 1
    end
  end
  return n
end

local parents = {}
if obj.status ~= nil and obj.status.parents ~= nil then
  parents = obj.status.parents
end

local progressing = nil
local weftParents = 0
for _, p in ipairs(parents) do
  local mine = p.controllerName == weft
  if mine then
    weftParents = weftParents + 1
  end
  if not current(p) then
    progressing = progressing or (parentName(p) .. ": waiting for its controller to observe generation " .. tostring(gen))
  else
    local accepted = find(p.conditions, "Accepted")
    local refs = find(p.conditions, "ResolvedRefs")
    local programmed = find(p.conditions, "Programmed")
    local partial = find(p.conditions, "PartiallyInvalid")
    if accepted ~= nil and accepted.status == "False" then
      hs.status = "Degraded"
      hs.message = parentName(p) .. ": " .. text(accepted)
      return hs
    end
    if refs ~= nil and refs.status == "False" then
      hs.status = "Degraded"
      hs.message = parentName(p) .. ": " .. text(refs)
      return hs
    end
    if mine and partial ~= nil and partial.status == "True" then
      hs.status = "Degraded"
      hs.message = parentName(p) .. ": " .. text(partial)
      return hs
    end
    if mine and programmed ~= nil and programmed.status == "False" and programmed.reason ~= "Pending" then
      hs.status = "Degraded"
      hs.message = parentName(p) .. ": " .. text(programmed)
      return hs
    end
    if mine and (accepted == nil or accepted.status ~= "True") then
      progressing = progressing or (parentName(p) .. ": waiting for Weft to accept the route")
    elseif mine and (programmed == nil or programmed.status ~= "True") then
      progressing = progressing or (parentName(p) .. ": " .. (programmed ~= nil and text(programmed) or "waiting for the proxies to run the route"))
    elseif programmed ~= nil and programmed.status ~= "True" then
      progressing = progressing or (parentName(p) .. ": " .. text(programmed))
    end
  end
end

if progressing ~= nil then
  hs.status = "Progressing"
  hs.message = progressing
  return hs
end
if weftParents < serviceParents() then
  hs.status = "Progressing"
  hs.message = "Waiting for Weft to report on every Service parent"
  return hs
end
if #parents == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for route status"
  return hs
end
hs.status = "Healthy"
hs.message = "Accepted and programmed by every parent"
return hs
