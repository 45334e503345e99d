-- A small real-time world, in the spirit of nano's tadpole demo, but the server runs the world:
-- fish wander on their own, players steer towards a point, and ten times a second every player
-- gets the state of what is near them. Shows groups, timers, multicast filters and hot reload.
--
--   request World.enter {name}   -> {id, name, x, y, size, view, tick}; you are in the world
--                                   (a name already taken gets "#<id>" added)
--   notify  World.move  {x, y}   -> your player swims towards (x, y)
--   notify  World.say   {text}   -> onSay {id, name, text} to the players who can see you
--   push    onState {tick, entities = {{id, kind, x, y, name}, ...}}  every tick, what you can see
--   push    onLeave {id}          a player left the world
local nano = require "nano"
local json = require "nano.json"

local World = {}

-- Settings are fields, so a reload that changes them takes effect (fields the new code adds are
-- added; existing ones keep their values — change a running world's settings in on_reload).
World.size = 1000 -- the world is a size x size square
World.view = 250 -- a player sees this far, in both axes (also the cell size of the grid)
World.tick = 0.1 -- seconds between ticks
World.fish_count = 40
World.fish_speed = 40 -- units per second
World.player_speed = 120

local floor, min, max, abs, sqrt, random = math.floor, math.min, math.max, math.abs, math.sqrt, math.random

-- Module-local state that must survive a hot reload lives in nano.persist: the same table every
-- time this file is loaded (a plain `local names = {}` would start empty after each reload, and
-- two players could then share a name). Component fields (self.x) survive without it.
local names = nano.persist("world.names") -- name -> id of the player who has it

-- ---------------------------------------------------------------------------------------------
-- lifecycle

function World:init()
  self.group = nano.new_group("world")
  self.entities = {} -- id -> { id, kind = "fish" | "player", x, y, vx, vy, tx, ty, name }
  self.players = setmetatable({}, { __mode = "k" }) -- session -> its entity
  self.next_id = 0
  self.ticks = 0
  for _ = 1, self.fish_count do self:_spawn_fish() end
  -- A player's entity goes when its session does (the session has already left the group).
  nano.on_session_closed(function(s) self:_remove_player(s) end)
end

function World:after_init()
  -- Timers outlive a reload. This one calls through `self`, the component table that a reload
  -- keeps, so from the next tick on it runs the new _tick.
  self.ticker = nano.new_timer(self.tick, function() self:_tick() end)
end

-- Runs after a hot reload swapped in this file's functions; `old` holds the fields as they were.
function World:on_reload(old)
  nano.log.info("world: reloaded at tick %d with %d players and %d entities", self.ticks,
                self.group:count(), self:_entity_count())
end

-- ---------------------------------------------------------------------------------------------
-- handlers

function World:enter(s, msg)
  local p = self.players[s]
  if not p then
    local name = type(msg) == "table" and type(msg.name) == "string" and msg.name:sub(1, 24) or ""
    p = self:_new_entity("player", random() * self.size, random() * self.size)
    if name == "" or names[name] then name = (name ~= "" and name or "player") .. "#" .. p.id end
    p.name = name
    names[name] = p.id
    p.tx, p.ty = p.x, p.y
    s:bind(p.id)
    self.players[s] = p
    self.group:add(s)
  end
  return { id = p.id, name = p.name, x = floor(p.x), y = floor(p.y), size = self.size, view = self.view,
           tick = self.tick }
end

function World:move(s, msg)
  local p = self:_player_of(s)
  if type(msg) ~= "table" or type(msg.x) ~= "number" or type(msg.y) ~= "number" then
    error({ code = 400, msg = "expected {x, y}" })
  end
  p.tx, p.ty = self:_clamp(msg.x), self:_clamp(msg.y)
end

function World:say(s, msg)
  local p = self:_player_of(s)
  if type(msg) ~= "table" or type(msg.text) ~= "string" then error({ code = 400, msg = "expected {text}" }) end
  -- Multicast: serialized once, sent to the members the filter picks.
  self.group:multicast("onSay", { id = p.id, name = p.name, text = msg.text:sub(1, 200) }, function(other)
    local q = self.players[other]
    return q ~= nil and self:_sees(q, p)
  end)
end

-- ---------------------------------------------------------------------------------------------
-- the tick (functions starting with _ are not handlers)

function World:_tick()
  self.ticks = self.ticks + 1
  local dt = self.tick
  for _, e in pairs(self.entities) do
    if e.kind == "fish" then
      self:_swim(e, dt)
    else
      self:_steer(e, dt)
    end
  end
  self:_send_state()
end

-- Fish wander: a small random turn each tick, bouncing off the walls.
function World:_swim(e, dt)
  local turn = (random() - 0.5) * 0.6
  local c, s = math.cos(turn), math.sin(turn)
  e.vx, e.vy = e.vx * c - e.vy * s, e.vx * s + e.vy * c
  e.x, e.y = e.x + e.vx * dt, e.y + e.vy * dt
  if e.x < 0 or e.x > self.size then e.vx = -e.vx end
  if e.y < 0 or e.y > self.size then e.vy = -e.vy end
  e.x, e.y = self:_clamp(e.x), self:_clamp(e.y)
end

-- Players swim straight to their target at player_speed.
function World:_steer(e, dt)
  local dx, dy = e.tx - e.x, e.ty - e.y
  local dist = sqrt(dx * dx + dy * dy)
  local step = self.player_speed * dt
  if dist <= step then
    e.x, e.y = e.tx, e.ty
  else
    e.x, e.y = e.x + dx / dist * step, e.y + dy / dist * step
  end
end

-- Interest management on a grid of view-sized cells: everything a player in cell (cx, cy) can
-- see is in the 3 x 3 cells around it. One snapshot per occupied cell, multicast to the players
-- in that cell: each snapshot is serialized once, however many players share the cell.
function World:_send_state()
  local view = self.view
  local cells = {} -- "cx:cy" -> list of entities
  for _, e in pairs(self.entities) do
    local key = floor(e.x / view) .. ":" .. floor(e.y / view)
    local list = cells[key]
    if not list then
      list = {}
      cells[key] = list
    end
    list[#list + 1] = e
  end
  local done = {}
  for _, p in pairs(self.players) do
    local cx, cy = floor(p.x / view), floor(p.y / view)
    local key = cx .. ":" .. cy
    if not done[key] then
      done[key] = true
      local seen = {}
      for nx = cx - 1, cx + 1 do
        for ny = cy - 1, cy + 1 do
          for _, e in ipairs(cells[nx .. ":" .. ny] or {}) do
            seen[#seen + 1] = { id = e.id, kind = e.kind, x = floor(e.x), y = floor(e.y), name = e.name }
          end
        end
      end
      self.group:multicast("onState", { tick = self.ticks, entities = json.array(seen) }, function(s)
        local q = self.players[s]
        return q ~= nil and floor(q.x / view) == cx and floor(q.y / view) == cy
      end)
    end
  end
end

-- ---------------------------------------------------------------------------------------------
-- helpers

function World:_new_entity(kind, x, y)
  self.next_id = self.next_id + 1
  local e = { id = self.next_id, kind = kind, x = x, y = y, vx = 0, vy = 0 }
  self.entities[e.id] = e
  return e
end

function World:_spawn_fish()
  local e = self:_new_entity("fish", random() * self.size, random() * self.size)
  local angle = random() * 2 * math.pi
  e.vx, e.vy = math.cos(angle) * self.fish_speed, math.sin(angle) * self.fish_speed
end

function World:_remove_player(s)
  local p = self.players[s]
  if not p then return end
  self.players[s] = nil
  self.entities[p.id] = nil
  names[p.name] = nil
  self.group:broadcast("onLeave", { id = p.id })
end

function World:_player_of(s)
  local p = self.players[s]
  if not p then error({ code = 403, msg = "enter the world first" }) end
  return p
end

-- What a player in cell (cx, cy) is sent: the 3 x 3 cells around it.
function World:_sees(viewer, e)
  local view = self.view
  return abs(floor(viewer.x / view) - floor(e.x / view)) <= 1
     and abs(floor(viewer.y / view) - floor(e.y / view)) <= 1
end

function World:_clamp(v)
  return min(max(v, 0), self.size)
end

function World:_entity_count()
  local n = 0
  for _ in pairs(self.entities) do n = n + 1 end
  return n
end

return World
