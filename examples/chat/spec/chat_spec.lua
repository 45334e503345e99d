-- The chat example against the real core: nano's chat demo routes and payloads, the stats
-- pipeline and the member-count timer. Run: cd examples/chat && nano-host test
local nt = require "nano.test"
local json = require "nano.json"

describe("chat room", function()
  local server
  -- the history in memory: each spec starts with an empty room (main.lua's first argument)
  before_each(function() server = nt.start("main.lua", { args = { ":memory:" } }) end)
  after_each(function() server:stop() end)

  -- Joins and returns the onMembers list the joiner got.
  local function join(c)
    assert.same({ code = 0, result = "success" }, c:request("room.join", {}))
    local _, msg = c:wait_push("onMembers")
    return msg.members
  end

  it("answers room.join like nano's demo and tells the first one the room is empty", function()
    local a = server:connect()
    assert.same({}, join(a))
    assert.equal(a:session():id(), a:session():uid(), "the session id is the uid")
  end)

  it("greets a newcomer a second after joining, from a task that waits", function()
    local a, b = server:connect(), server:connect()
    join(a)
    join(b)
    server:advance(0.9)
    b:sync()
    assert.equal(0, #b:pushes("onWelcome"))
    server:advance(0.1)
    local _, msg = b:wait_push("onWelcome")
    assert.same({ content = "Welcome! 1 other(s) here." }, msg)
  end)

  it("sends an empty member list as a JSON array, as nano does", function()
    -- nano's clients may index members as an array: [] and {} are not the same to them
    local marshal = json.marshal
    local sent
    json.marshal = function(v)
      local out = marshal(v)
      if type(v) == "table" and v.members ~= nil then sent = out end
      return out
    end
    local ok, err = pcall(function() join(server:connect()) end)
    json.marshal = marshal
    assert(ok, err)
    assert.equal('{"members":[]}', sent)
  end)

  it("accepts any payload for room.join, even one that is not JSON", function()
    local c = server:connect()
    c:send_raw(require("nano.codec").encode_packet(4,
      require("nano.codec").encode_message(0, 99, "room.join", "\1\2 not json")))
    c:sync()
    local _, msg = c:wait_push("onMembers")
    assert.same({}, msg.members)
  end)

  it("tells the newcomer who is there and the others who came", function()
    local a, b, c = server:connect(), server:connect(), server:connect()
    join(a)
    assert.same({ a:session():uid() }, join(b))
    local _, news = a:wait_push("onNewUser")
    assert.same({ content = "New user: " .. b:session():id() }, news)
    local members = join(c)
    table.sort(members)
    local expect = { a:session():uid(), b:session():uid() }
    table.sort(expect)
    assert.same(expect, members)
    assert.equal(2, #a:pushes("onNewUser"), "a heard about b and c")
    assert.equal(1, #b:pushes("onNewUser"), "b heard about c only")
    assert.equal(0, #c:pushes("onNewUser"), "c hears about nobody before it")
  end)

  it("broadcasts room.message to every member, the sender included", function()
    local a, b = server:connect(), server:connect()
    join(a)
    join(b)
    a:notify("room.message", { name = "ann", content = "hello" })
    for _, c in ipairs({ a, b }) do
      local _, msg = c:wait_push("onMessage")
      assert.same({ name = "ann", content = "hello" }, msg)
    end
  end)

  it("passes on only name and content, as nano's UserMessage does", function()
    local a = server:connect()
    join(a)
    a:notify("room.message", { name = "ann", content = "hi", admin = true })
    local _, msg = a:wait_push("onMessage")
    assert.same({ name = "ann", content = "hi" }, msg)
  end)

  it("does not let a session talk before it joined", function()
    local a, outsider = server:connect(), server:connect()
    join(a)
    local res, err = outsider:try_request("room.message", { name = "x", content = "spam" })
    assert.is_nil(res)
    assert.equal(403, err.code)
    outsider:sync()
    assert.equal(0, #a:pushes("onMessage"))
  end)

  it("joining twice changes nothing", function()
    local a, b = server:connect(), server:connect()
    join(a)
    join(b)
    assert.same({ code = 0, result = "success" }, a:request("room.join", {}))
    a:sync()
    b:sync()
    assert.equal(0, #b:pushes("onNewUser"), "nobody is announced twice")
    assert.equal(2, a:request("stats.get", {}).members)
  end)

  it("a member that disconnects leaves the room", function()
    local a, b = server:connect(), server:connect()
    join(a)
    join(b)
    b:close()
    assert.equal(1, a:request("stats.get", {}).members)
    a:notify("room.message", { name = "ann", content = "still here?" })
    local _, msg = a:wait_push("onMessage")
    assert.equal("still here?", msg.content)
  end)

  it("counts the bytes in and out on the pipeline", function()
    local a = server:connect()
    local before = a:request("stats.get", {})
    join(a)
    a:notify("room.message", { name = "ann", content = "0123456789" })
    a:wait_push("onMessage")
    local after = a:request("stats.get", {})
    -- in: stats.get "{}" + room.join "{}" + the message; out: at least the pushes and responses
    local message = #'{"name":"ann","content":"0123456789"}'
    assert.is_true(after.inbound_bytes - before.inbound_bytes >= message + 2 + 2)
    assert.is_true(after.outbound_bytes - before.outbound_bytes >=
      #'{"members":[]}' + #'{"code":0,"result":"success"}' + message)
  end)

  it("logs the member count every minute", function()
    local nano, core = require "nano", require "nano.core"
    local logged, level = {}, core.log_level()
    nano.set_logger(function(_, msg) logged[#logged + 1] = msg end)
    nano.set_log_level("info") -- nano-host test runs at "warn"
    finally(function()
      nano.set_logger(nil)
      core.log_level(level)
    end)
    join(server:connect())
    join(server:connect())
    server:advance(59)
    for _, line in ipairs(logged) do assert.is_nil(line:find("members", 1, true)) end
    server:advance(1)
    local found
    for _, line in ipairs(logged) do found = found or line:match("room: (%d+) members") end
    assert.equal("2", found)
  end)
end)
