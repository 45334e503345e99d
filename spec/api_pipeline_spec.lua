-- nano.pipeline: inbound stages before handlers, outbound stages before writes (pushes,
-- responses, error responses, group broadcasts), dropping, rewriting, order and management.
local nt = require "nano.test"
local nano = require "nano"
local U = require "spec.fixtures.api_util"

describe("nano.pipeline", function()
  local server, c
  before_each(function()
    server = nt.start(U.FIXTURE)
    c = server:connect()
  end)
  after_each(function()
    server:stop()
    U.restore_log_level()
  end)

  describe("inbound", function()
    it("sees a request (type, id, route, raw data) before its handler", function()
      local seen
      nano.pipeline.inbound:push_back(function(s, msg)
        seen = { s = s, type = msg.type, id = msg.id, route = msg.route, data = msg.data }
      end)
      assert.same({ a = 1 }, c:request("Api.echo", { a = 1 }))
      assert.equal(c:session(), seen.s)
      assert.equal("request", seen.type)
      assert.equal(c:session():last_mid(), seen.id)
      assert.equal("Api.echo", seen.route)
      assert.equal('{"a":1}', seen.data)
    end)

    it("sees a notify, without an id", function()
      local seen
      nano.pipeline.inbound:push_back(function(_, msg) seen = msg end)
      c:notify("Api.note", { n = 1 })
      c:wait_push("onNote")
      assert.equal("notify", seen.type)
      assert.is_nil(seen.id)
      assert.equal("Api.note", seen.route)
    end)

    it("runs push_front stages before push_back ones, each in order", function()
      local order = {}
      local p = nano.pipeline.inbound
      p:push_back(function() order[#order + 1] = "b1" end)
      p:push_back(function() order[#order + 1] = "b2" end)
      p:push_front(function() order[#order + 1] = "f1" end)
      p:push_front(function() order[#order + 1] = "f2" end)
      c:request("Api.echo", {})
      assert.same({ "f2", "f1", "b1", "b2" }, order)
    end)

    it("drops a request on nil, {code, msg}: the handler does not run and the client gets that error", function()
      local logs = U.capture_logs()
      local later = 0
      nano.pipeline.inbound:push_back(function(s, msg)
        if msg.route == "Api.echo" then return nil, { code = 401, msg = "log in first" } end
      end)
      nano.pipeline.inbound:push_back(function() later = later + 1 end)
      local res, err = c:try_request("Api.echo", { a = 1 })
      assert.is_nil(res)
      assert.same({ code = 401, msg = "log in first" }, err)
      assert.equal(0, later)
      assert.same({ responded = true }, c:request("Api.respond", {})) -- other routes pass
      assert.equal(1, later)
      assert.truthy(U.find(logs, "Api.echo: dropped by the inbound pipeline: 401 log in first"))
    end)

    it("drops a request when a stage raises or returns false: error response 500", function()
      local logs = U.capture_logs()
      local mode = "raise"
      nano.pipeline.inbound:push_back(function()
        if mode == "raise" then error("stage broke") end
        return false, "no"
      end)
      local _, err = c:try_request("Api.echo", {})
      assert.same({ code = 500, msg = "internal error" }, err)
      assert.truthy(U.find(logs, "stage broke"))
      mode = "false"
      _, err = c:try_request("Api.echo", {})
      assert.same({ code = 500, msg = "internal error" }, err)
    end)

    it("drops a notify (logged, nothing answered): its handler does not run", function()
      local logs = U.capture_logs()
      nano.pipeline.inbound:push_back(function(_, msg)
        if msg.route == "Api.note" then return nil, "muted" end
      end)
      c:notify("Api.note", { n = 1 })
      c:sync()
      assert.same({}, c:pushes())
      assert.truthy(U.find(logs, "Api.note: dropped by the inbound pipeline: muted"))
    end)

    it("lets a stage replace the payload the handler gets", function()
      nano.pipeline.inbound:push_back(function(_, msg) msg.data = '{"rewritten":true}' end)
      assert.same({ rewritten = true }, c:request("Api.echo", { original = true }))
    end)

    it("passes raw payloads to raw handlers after the stages", function()
      nano.pipeline.inbound:push_back(function(_, msg) msg.data = msg.data .. "!" end)
      assert.same({ len = 4 }, c:request("Raw.len", "x")) -- the JSON '"x"' and the stage's '!'
    end)
  end)

  describe("outbound", function()
    it("sees pushes and responses before they are written, and may rewrite them", function()
      local seen = {}
      nano.pipeline.outbound:push_back(function(s, msg)
        seen[#seen + 1] = { type = msg.type, id = msg.id, route = msg.route, data = msg.data }
        if msg.type == "push" then msg.data = '{"changed":true}' end
      end)
      local s = c:session()
      assert.is_true(s:push("onHello", { a = 1 }))
      local _, msg = c:wait_push("onHello")
      assert.same({ changed = true }, msg)
      assert.same({ b = 2 }, c:request("Api.echo", { b = 2 }))
      assert.same({ type = "push", route = "onHello", data = '{"a":1}' }, seen[1])
      assert.equal("response", seen[2].type)
      assert.equal(s:last_mid(), seen[2].id)
      assert.equal('{"b":2}', seen[2].data)
    end)

    it("sees s:response and error responses (error = true)", function()
      local seen = {}
      nano.pipeline.outbound:push_back(function(_, msg) seen[#seen + 1] = msg end)
      assert.same({ responded = true }, c:request("Api.respond", {}))
      c:try_request("Api.deny", {})
      assert.equal("response", seen[1].type)
      assert.is_nil(seen[1].error)
      assert.is_true(seen[2].error)
      assert.same({ code = 403, msg = "not allowed" }, require("nano.json").unmarshal(seen[2].data))
    end)

    it("drops a push: s:push returns nil, err and the client gets nothing", function()
      nano.pipeline.outbound:push_back(function(_, msg)
        if msg.route == "onSecret" then return nil, "classified" end
      end)
      local s = c:session()
      assert.same({ nil, "dropped by the outbound pipeline: classified" }, { s:push("onSecret", {}) })
      assert.is_true(s:push("onPublic", {}))
      c:wait_push("onPublic")
      assert.same({}, c:pushes("onSecret"))
    end)

    it("runs per member in a broadcast: unchanged members share the buffer, changed and dropped ones are handled one by one", function()
      local g = nano.new_group("g")
      local cs = { c, server:connect(), server:connect() }
      for _, x in ipairs(cs) do g:add(x:session()) end
      local calls = 0
      nano.pipeline.outbound:push_back(function(s, msg)
        calls = calls + 1
        if s == cs[2]:session() then msg.data = '{"for":"two"}' end
        if s == cs[3]:session() then return nil, "not three" end
      end)
      local n, failed = g:broadcast("onAll", { all = true })
      assert.equal(3, calls)
      assert.equal(2, n)
      assert.same({ cs[3]:session() }, failed)
      assert.same({ all = true }, select(2, cs[1]:wait_push("onAll")))
      assert.same({ ["for"] = "two" }, select(2, cs[2]:wait_push("onAll")))
      cs[3]:sync()
      assert.same({}, cs[3]:pushes("onAll"))
    end)
  end)

  describe("chains", function()
    it("remove, clear and count manage the stages; with none the hooks are gone", function()
      local p = nano.pipeline.inbound
      local hits = 0
      local stage = function() hits = hits + 1 end
      p:push_back(stage)
      p:push_back(function() end)
      assert.equal(2, p:count())
      assert.is_true(p:remove(stage))
      assert.is_false(p:remove(stage))
      assert.equal(1, p:count())
      c:request("Api.echo", {})
      assert.equal(0, hits)
      p:clear()
      assert.equal(0, p:count())
    end)

    it("process runs the stages on a message and reports a drop", function()
      local p = nano.pipeline.outbound
      p:push_back(function(_, msg) msg.data = msg.data:upper() end)
      p:push_back(function(_, msg) if msg.route == "bad" then return nil, "bad route" end end)
      local msg = { type = "push", route = "onX", data = "abc" }
      assert.is_true(p:process(c:session(), msg))
      assert.equal("ABC", msg.data)
      assert.same({ nil, "bad route" }, { p:process(c:session(), { type = "push", route = "bad", data = "" }) })
    end)

    it("refuses a stage that makes msg.data something other than a string", function()
      local p = nano.pipeline.inbound
      p:push_back(function(_, msg) msg.data = 42 end)
      local _, err = p:process(c:session(), { type = "notify", route = "x", data = "" })
      assert.equal("inbound pipeline: msg.data must stay a string", err)
    end)

    it("raises on a stage that is not a function, or a call with '.'", function()
      assert.has_error(function() nano.pipeline.inbound:push_back("x") end, "push_back: expected a function(session, msg)")
      assert.has_error(function() nano.pipeline.outbound.push_front(function() end) end)
    end)

    it("starts empty on every nt.start", function()
      assert.equal(0, nano.pipeline.inbound:count())
      assert.equal(0, nano.pipeline.outbound:count())
    end)
  end)
end)
